/** The heartbeat helper against a real controller: an agent written with the SDK streams with
 * its node token, turns its node READY, receives the replica the controller places on it and
 * reports it running; it reconnects when the controller asks, and gives up on a deleted node. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  AgentSession,
  Automator67Client,
  Automator67Error,
  Code,
  DeploymentStatus,
  NodeStatus,
  ReplicaDesiredState,
  ReplicaState,
  type Assignments,
  type Disconnect,
  type ReplicaReportInit,
} from "../src/index.js";
import { Controller, FAST_ARGS, firstOf, seedNode } from "./support/controller.js";

let controller: Controller;
let a67: Automator67Client;

before(async () => {
  // Streams end (with a Reconnect) every ~2 s, the shortest the controller allows at 0.2 s beats.
  controller = await new Controller([...FAST_ARGS, "--stream-max-age-s", "2"]).start();
  a67 = controller.client();
});
after(() => controller?.dispose());

async function registerNode(region: string): Promise<{ nodeId: string; agent: Automator67Client }> {
  const { node, agentToken } = await a67.nodes.registerNode({ node: seedNode({ region }) });
  return { nodeId: node!.id, agent: controller.client(agentToken) };
}

test("an agent receives its assignment and runs it", async () => {
  const stop = new AbortController();
  const nodes = a67.watchNodes({ signal: stop.signal })[Symbol.asyncIterator]();
  const deployments = a67.watchDeployments({ signal: stop.signal })[Symbol.asyncIterator]();
  const { nodeId, agent } = await registerNode("agent-eu");

  // What this simulated agent runs: every replica its latest Assignments asks to RUN.
  let running: ReplicaReportInit[] = [];
  const acks: bigint[] = [];
  let started: () => void = () => {};
  const sessionStarted = new Promise<void>((resolve) => (started = resolve));
  const session = new AgentSession(agent, {
    nodeId,
    agentVersion: "ts-sdk-test",
    drivers: ["simulated"],
    load: () => ({ cpuPercent: 12.5, memoryUsedGb: 1 }),
    reports: () => running,
    onSession: () => started(),
    onAck: (ack) => acks.push(ack.sequence),
    onAssignments: (set: Assignments) => {
      running = set.assignments
        .filter((a) => a.desiredState === ReplicaDesiredState.RUN)
        .map((a) => ({
          deploymentId: a.deployment!.id,
          replicaIndex: a.replicaIndex,
          state: ReplicaState.RUNNING,
        }));
    },
  });
  const assignments = session.assignments()[Symbol.asyncIterator]();
  const run = session.run();
  try {
    await firstOf(nodes, (e) => e.node?.id === nodeId && e.node.status === NodeStatus.READY);
    await sessionStarted;
    assert.notEqual(session.sessionId, "");
    assert.equal(session.intervalMs, 200);

    // A node token may stream, and do nothing else.
    await assert.rejects(agent.nodes.listNodes({}), (e: unknown) =>
      Automator67Error.is(e, Code.PermissionDenied),
    );

    const { deployment } = await a67.deployments.createDeployment({
      deployment: {
        name: "agent-web",
        image: "nginx:1.27",
        replicas: 1,
        resources: { cpuCores: 1, memoryGb: 1 },
        constraints: { region: "agent-eu" },
      },
    });
    const id = deployment!.id;
    const set = await firstOf(assignments, (s) =>
      s.assignments.some((a) => a.deployment?.id === id),
    );
    const mine = set.assignments.find((a) => a.deployment?.id === id)!;
    assert.equal(mine.desiredState, ReplicaDesiredState.RUN);
    assert.equal(mine.replicaIndex, 0);
    assert.equal(mine.deployment?.image, "nginx:1.27");

    const runningEvent = await firstOf(
      deployments,
      (e) => e.deployment?.id === id && e.deployment.status === DeploymentStatus.RUNNING,
    );
    assert.deepEqual(runningEvent.deployment?.nodeIds, [nodeId]);
    assert.ok(acks.length >= 1, "beats are acked");
    assert.ok(
      acks.every((s, i) => i === 0 || s > acks[i - 1]!),
      "acks in sequence order",
    );
  } finally {
    session.stop();
    stop.abort();
    await nodes.return?.();
    await deployments.return?.();
  }
  await run; // a clean stop resolves
});

test("the agent reconnects at once when the controller asks", async () => {
  const { nodeId, agent } = await registerNode("agent-us");
  const sessions: string[] = [];
  const disconnects: Disconnect[] = [];
  let twoSessions: () => void = () => {};
  const second = new Promise<void>((resolve) => (twoSessions = resolve));
  const session = new AgentSession(agent, {
    nodeId,
    onSession: (s) => {
      sessions.push(s.sessionId);
      if (sessions.length === 2) twoSessions();
    },
    onDisconnect: (d) => disconnects.push(d),
  });
  const run = session.run();
  const timeout = setTimeout(() => session.stop(), 15_000);
  await Promise.race([second, run]);
  clearTimeout(timeout);
  session.stop();
  await run;
  assert.equal(sessions.length, 2, "a second stream after the controller's Reconnect");
  assert.notEqual(sessions[0], sessions[1]);
  assert.equal(disconnects[0]?.kind, "reconnect");
  assert.match(disconnects[0]?.reason ?? "", /lifetime|reconnect/i);
  assert.ok(disconnects[0]!.retryInMs < 250, "no backoff for a reconnect asked for");
});

test("the agent gives up when its node is deleted, or the token is another node's", async () => {
  const { nodeId, agent } = await registerNode("agent-gone");
  await a67.nodes.deleteNode({ nodeId });
  // Bounded: an agent that kept retrying would make `run()` resolve (stopped), failing the test.
  const signal = AbortSignal.timeout(10_000);
  await assert.rejects(new AgentSession(agent, { nodeId, signal }).run(), (e: unknown) =>
    Automator67Error.is(e, Code.NotFound, "NODE_NOT_FOUND"),
  );

  const other = await registerNode("agent-other");
  const session = new AgentSession(agent, { nodeId: other.nodeId, signal });
  await assert.rejects(session.run(), (e: unknown) =>
    Automator67Error.is(e, Code.PermissionDenied),
  );
});
