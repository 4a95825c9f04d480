/** NodeService through the SDK against a real controller: register, get, list over pages with
 * filters, update (labels, cordon, drain), delete, and the error paths with their typed details. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  Automator67Client,
  Automator67Error,
  Code,
  DrainState,
  NodeStatus,
  type Node,
} from "../src/index.js";
import { Controller, seedNode } from "./support/controller.js";

let controller: Controller;
let a67: Automator67Client;

before(async () => {
  controller = await new Controller().start();
  a67 = controller.client();
});
after(() => controller?.dispose());

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

async function rejection(call: Promise<unknown>): Promise<Automator67Error> {
  const error = await call.then(
    () => assert.fail("the call succeeded"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof Automator67Error, `not an Automator67Error: ${String(error)}`);
  return error;
}

test("a node is registered, read back and deleted", async () => {
  const { node, agentToken } = await a67.nodes.registerNode({
    node: seedNode({ labels: { tier: "gpu" } }),
  });
  assert.ok(node !== undefined);
  assert.match(node.id, /^[0-9a-f-]{36}$/);
  assert.equal(node.status, NodeStatus.PENDING);
  assert.equal(node.hasCredentials, true);
  assert.equal(node.credentials, undefined, "credentials are input only");
  assert.notEqual(agentToken, "", "a controller with a key returns the node's token");

  const got = (await a67.nodes.getNode({ nodeId: node.id })).node;
  assert.equal(got?.id, node.id);
  assert.deepEqual(got?.labels, { tier: "gpu" });
  assert.equal(got?.capabilities?.cpuCores, 4);

  await a67.nodes.deleteNode({ nodeId: node.id, etag: got?.etag ?? "" });
  const gone = await rejection(a67.nodes.getNode({ nodeId: node.id }));
  assert.equal(gone.code, Code.NotFound);
});

test("updateNode changes labels, cordons, drains and checks the etag", async () => {
  const { node } = await a67.nodes.registerNode({ node: seedNode({ labels: { tier: "cpu" } }) });
  assert.ok(node !== undefined);

  const cordoned = (
    await a67.nodes.updateNode({
      node: { id: node.id, etag: node.etag, labels: { tier: "gpu" }, unschedulable: true },
      updateMask: { paths: ["labels", "unschedulable"] },
    })
  ).node;
  assert.deepEqual(cordoned?.labels, { tier: "gpu" });
  assert.equal(cordoned?.unschedulable, true);

  const stale = await rejection(
    a67.nodes.updateNode({
      node: { id: node.id, etag: node.etag },
      updateMask: { paths: ["unschedulable"] },
    }),
  );
  assert.ok(Automator67Error.is(stale, Code.Aborted, "ETAG_MISMATCH"));

  const draining = (
    await a67.nodes.updateNode({
      node: { id: node.id, drain: { timeout: { seconds: 600n } } },
      updateMask: { paths: ["drain"] },
    })
  ).node;
  assert.ok(draining?.drain !== undefined);
  assert.ok([DrainState.DRAINING, DrainState.COMPLETE].includes(draining.drain.state));
  const uncordoned = (
    await a67.nodes.updateNode({
      node: { id: node.id, unschedulable: false },
      updateMask: { paths: ["drain", "unschedulable"] },
    })
  ).node;
  assert.equal(uncordoned?.unschedulable, false);
  assert.equal(uncordoned?.drain, undefined);

  const bad = await rejection(
    a67.nodes.updateNode({ node: { id: node.id }, updateMask: { paths: ["provider"] } }),
  );
  assert.deepEqual(
    bad.fieldViolations.map((v) => v.field),
    ["update_mask"],
  );
});

test("listNodes iterates every page; filters by region and label", async () => {
  const region = "list-eu";
  const registered: Node[] = [];
  for (let i = 0; i < 5; i++) {
    const labels = { tier: i < 3 ? "gpu" : "cpu" };
    const { node } = await a67.nodes.registerNode({ node: seedNode({ region, labels }) });
    registered.push(node!);
  }
  await a67.nodes.registerNode({ node: seedNode({ region: "list-elsewhere" }) });
  const ids = registered.map((n) => n.id).sort();

  const filter = `region = "${region}"`;
  const first = await a67.nodes.listNodes({ filter, pageSize: 2 });
  assert.equal(first.nodes.length, 2);
  assert.notEqual(first.nextPageToken, "", "more than one page");

  const pagesSeen: number[] = [];
  const all = await collect(
    a67.listNodes({ filter, pageSize: 2 }, { onHeader: () => pagesSeen.push(1) }),
  );
  assert.deepEqual(
    all.map((n) => n.id),
    ids,
    "every node once, ordered by id",
  );
  assert.equal(pagesSeen.length, 3, "5 nodes in pages of 2");

  const gpu = await collect(a67.listNodes({ filter: `${filter} AND labels.tier = "gpu"` }));
  assert.equal(gpu.length, 3);
  assert.ok(gpu.every((n) => n.labels.tier === "gpu"));

  const pending = await collect(a67.listNodes({ filter: `status = PENDING AND ${filter}` }));
  assert.equal(pending.length, 5);

  // Breaking out of the loop fetches no further page.
  for await (const node of a67.listNodes({ filter, pageSize: 1 })) {
    assert.equal(node.id, ids[0]);
    break;
  }
});

// The reasons are the controller's stable contract (README, "The reasons, by code"): SDK users
// branch on them, so the tests pin them along with the code.

test("NOT_FOUND carries its reason and the id", async () => {
  const missing = "00000000-0000-4000-8000-000000000000";
  const error = await rejection(a67.nodes.getNode({ nodeId: missing }));
  assert.equal(error.code, Code.NotFound);
  assert.equal(error.codeName, "NOT_FOUND");
  assert.equal(error.reason, "NODE_NOT_FOUND");
  assert.equal(error.domain, "automator67.io");
  assert.equal(error.metadata.node_id, missing);
  assert.match(error.message, /^\[NOT_FOUND\] /);
  assert.ok(error.rawMessage.includes(missing));
  assert.ok(Automator67Error.is(error, Code.NotFound, "NODE_NOT_FOUND"));
});

test("INVALID_ARGUMENT names each invalid field", async () => {
  const node = seedNode({ provider: "", capabilities: { cpuCores: -1, memoryGb: 8 } });
  const error = await rejection(a67.nodes.registerNode({ node }));
  assert.equal(error.code, Code.InvalidArgument);
  assert.equal(error.reason, "INVALID_FIELD");
  const fields = error.fieldViolations.map((v) => v.field).sort();
  assert.deepEqual(fields, ["node.capabilities.cpu_cores", "node.provider"]);
  assert.ok(error.fieldViolations.every((v) => v.description !== ""));
  assert.ok(error.details.length >= 2, "ErrorInfo and BadRequest, both decoded");
});

test("PERMISSION_DENIED for a viewer that writes; the viewer may read", async () => {
  const viewer = controller.client(await controller.token("viewer"));
  const page = await viewer.nodes.listNodes({});
  assert.ok(page.nodes.length >= 0);
  const error = await rejection(viewer.nodes.registerNode({ node: seedNode() }));
  assert.equal(error.code, Code.PermissionDenied);
  assert.equal(error.reason, "ROLE_NOT_PERMITTED");
  assert.equal(error.metadata.role, "viewer");
});

test("UNAUTHENTICATED without a valid token", async () => {
  const stranger = controller.client("not-a-token");
  const error = await rejection(stranger.nodes.getNodeStats({}));
  assert.equal(error.code, Code.Unauthenticated);
  assert.equal(error.reason, "TOKEN_INVALID");
});
