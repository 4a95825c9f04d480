/** Watches through the SDK: resumed from the last revision after the controller restarts (a
 * real restart on the same port and data), continued later from a saved revision, and the
 * resume rules on a scripted stream. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import {
  Automator67Client,
  Automator67Error,
  Code,
  DeploymentEventType,
  NodeEventType,
  Watch,
  WatchNodesResponseSchema,
  type WatchNodesResponse,
} from "../src/index.js";
import { Controller, FAST_ARGS, firstOf, freePort, seedNode } from "./support/controller.js";

let controller: Controller;
let a67: Automator67Client;

before(async () => {
  // A fixed port: the restarted controller must be where the watch reconnects to.
  controller = await new Controller(FAST_ARGS, await freePort()).start();
  a67 = controller.client();
});
after(() => controller?.dispose());

async function register(region = "watch"): Promise<string> {
  return (await a67.nodes.registerNode({ node: seedNode({ region }) })).node!.id;
}

test("a node watch resumes where it broke when the controller restarts", async () => {
  const a = await register();
  const stop = new AbortController();
  const reconnects: Array<Automator67Error | undefined> = [];
  const watch = a67.watchNodes({
    signal: stop.signal,
    backoff: { initialMs: 50, maxMs: 300 },
    onReconnect: (error) => reconnects.push(error),
  });
  const events = watch[Symbol.asyncIterator]();
  try {
    const synced = await firstOf(events, (e) => e.type === NodeEventType.SYNCED);
    assert.equal(watch.revision, synced.revision);
    const b = await register();
    const added = await firstOf(events, (e) => e.type === NodeEventType.ADDED);
    assert.equal(added.node?.id, b);
    assert.equal(watch.revision, added.revision, "a live event moves the resume point");

    await controller.stop();
    await controller.start();
    // Changes the watch is not there to see yet (it may or may not have reconnected).
    const c = await register();
    await a67.nodes.deleteNode({ nodeId: a });
    const d = await register();

    const seen: WatchNodesResponse[] = [];
    await firstOf(events, (e) => {
      seen.push(e);
      return e.node?.id === d;
    });
    const ids = seen.filter((e) => e.node !== undefined).map((e) => e.node!.id);
    assert.deepEqual(ids, [c, a, d], "each change after the break, once, in order");
    const deleted = seen.find((e) => e.node?.id === a);
    assert.equal(deleted?.type, NodeEventType.DELETED);
    assert.equal(deleted?.node?.provider, "render", "a DELETED event carries the last state");
    assert.ok(!seen.some((e) => e.type === NodeEventType.RESET), "no state sent again");
    assert.ok(reconnects.length >= 1, "the stream broke");
    const first = reconnects[0];
    assert.equal(first?.code, Code.Unavailable);
    assert.equal(first?.reason, "SHUTTING_DOWN");
    const revisions = seen.map((e) => e.revision);
    assert.deepEqual(
      [...revisions].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
      revisions,
    );
  } finally {
    stop.abort();
    await events.return?.();
  }
});

test("a watch continues later from a saved revision", async () => {
  const stop = new AbortController();
  const first = a67.watchDeployments({ signal: stop.signal });
  const firstEvents = first[Symbol.asyncIterator]();
  await firstOf(firstEvents, (e) => e.type === DeploymentEventType.SYNCED);
  const created = await a67.deployments.createDeployment({
    deployment: { name: "watched", image: "nginx:1.27" },
  });
  await firstOf(firstEvents, (e) => e.deployment?.id === created.deployment?.id);
  const saved = first.revision;
  stop.abort();
  await firstEvents.return?.();

  const later = await a67.deployments.createDeployment({
    deployment: { name: "watched-later", image: "nginx:1.27" },
  });
  const again = new AbortController();
  const second = a67.watchDeployments({ signal: again.signal, startRevision: saved });
  const secondEvents = second[Symbol.asyncIterator]();
  try {
    // The scheduler may still change "watched" after the saved revision (it finds no node
    // for it): those events come too. What must not come is anything at or before `saved`.
    const seen: { revision: bigint; type: DeploymentEventType; id?: string }[] = [];
    await firstOf(secondEvents, (e) => {
      seen.push({ revision: e.revision, type: e.type, id: e.deployment?.id });
      return e.deployment?.id === later.deployment?.id;
    });
    assert.ok(
      seen.every((e) => e.revision > saved),
      `only what came after ${saved}: ${JSON.stringify(seen, (_, v) => (typeof v === "bigint" ? v.toString() : v))}`,
    );
    const replayed = seen.some(
      (e) => e.type === DeploymentEventType.ADDED && e.id === created.deployment?.id,
    );
    assert.ok(!replayed, "the first deployment's creation is not sent again");
  } finally {
    again.abort();
    await secondEvents.return?.();
  }
});

test("a start revision beyond the store ends the watch with REVISION_AHEAD", async () => {
  const watch = a67.watchNodes({ startRevision: 1n << 40n });
  await assert.rejects(
    async () => {
      for await (const _ of watch) assert.fail("no event expected");
    },
    (error: unknown) =>
      Automator67Error.is(error, Code.InvalidArgument, "REVISION_AHEAD") &&
      error.fieldViolations.some((v) => v.field === "start_revision"),
  );
});

// The resume rules on scripted streams: no server can be made to break at these points.

function event(type: NodeEventType, revision: number, id = ""): WatchNodesResponse {
  return create(WatchNodesResponseSchema, {
    type,
    revision: BigInt(revision),
    ...(id && { node: { id } }),
  });
}

function scripted(streams: Array<Array<WatchNodesResponse | Error>>, starts: bigint[]) {
  return new Watch<WatchNodesResponse>(
    {
      synced: NodeEventType.SYNCED,
      reset: NodeEventType.RESET,
      schema: WatchNodesResponseSchema,
      open: (start) => {
        starts.push(start);
        const script = streams.shift() ?? [];
        return (async function* () {
          for (const item of script) {
            if (item instanceof Error) throw item;
            yield item;
          }
          await new Promise(() => {}); // then quiet, as a live stream is
        })();
      },
    },
    { backoff: { initialMs: 1, maxMs: 1 } },
  );
}

async function take<T>(iterable: AsyncIterable<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) {
    out.push(item);
    if (out.length === n) break;
  }
  return out;
}

test("a stream broken after SYNCED resumes from the last event's revision", async () => {
  const starts: bigint[] = [];
  const broken = new ConnectError("connection lost", Code.Unavailable);
  const watch = scripted(
    [
      [
        event(NodeEventType.ADDED, 3, "x"),
        event(NodeEventType.SYNCED, 7),
        event(NodeEventType.CHANGED, 9, "x"),
        broken,
      ],
      [event(NodeEventType.SYNCED, 9), event(NodeEventType.DELETED, 12, "x")],
    ],
    starts,
  );
  const seen = await take(watch, 5);
  assert.deepEqual(starts, [0n, 9n]);
  assert.deepEqual(
    seen.map((e) => e.type),
    [
      NodeEventType.ADDED,
      NodeEventType.SYNCED,
      NodeEventType.CHANGED,
      NodeEventType.SYNCED,
      NodeEventType.DELETED,
    ],
  );
  assert.equal(watch.revision, 12n);
});

test("a stream broken while sending the state starts over after a RESET of its own", async () => {
  const starts: bigint[] = [];
  const broken = new ConnectError("connection lost", Code.Unavailable);
  const watch = scripted(
    [
      [event(NodeEventType.ADDED, 5, "x"), broken],
      [event(NodeEventType.ADDED, 5, "x"), event(NodeEventType.SYNCED, 6)],
    ],
    starts,
  );
  const seen = await take(watch, 4);
  assert.deepEqual(starts, [0n, 0n]);
  assert.deepEqual(
    seen.map((e) => e.type),
    [NodeEventType.ADDED, NodeEventType.RESET, NodeEventType.ADDED, NodeEventType.SYNCED],
  );
  assert.equal(watch.revision, 6n);
});

test("a non-retryable error ends the watch", async () => {
  const denied = new ConnectError("no", Code.PermissionDenied);
  const watch = scripted([[denied]], []);
  await assert.rejects(take(watch, 1), (e: unknown) =>
    Automator67Error.is(e, Code.PermissionDenied),
  );
});
