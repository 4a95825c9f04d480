/** DeploymentService through the SDK against a real controller: create, get, list, update with
 * a field mask and an etag, delete, and the stale-etag ABORTED with the current etag. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  Automator67Client,
  Automator67Error,
  Code,
  DeploymentStatus,
  PlacementStrategy,
} from "../src/index.js";
import { Controller } from "./support/controller.js";

let controller: Controller;
let a67: Automator67Client;

before(async () => {
  controller = await new Controller().start();
  a67 = controller.client();
});
after(() => controller?.dispose());

function web(name: string) {
  return { name, image: "nginx:1.27", resources: { cpuCores: 0.5, memoryGb: 0.25 } };
}

/**
 * `change(etag)` retried with the etag an ABORTED names: the read-modify-write loop of AIP-154.
 * Needed here because the scheduler changes a pending deployment too (its status reason), so
 * an etag the test read may be stale by the time it is used.
 */
async function withCurrentEtag<T>(etag: string, change: (etag: string) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await change(etag);
    } catch (error) {
      if (attempt === 5 || !Automator67Error.is(error, Code.Aborted, "ETAG_MISMATCH")) throw error;
      etag = error.metadata.current_etag ?? "";
    }
  }
}

async function rejection(call: Promise<unknown>): Promise<Automator67Error> {
  const error = await call.then(
    () => assert.fail("the call succeeded"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof Automator67Error, `not an Automator67Error: ${String(error)}`);
  return error;
}

test("create, get, update (field mask, etag) and delete a deployment", async () => {
  const created = (
    await a67.deployments.createDeployment({ deployment: web("web"), requestId: "create-web-1" })
  ).deployment!;
  assert.equal(created.status, DeploymentStatus.PENDING, "no node to place it on");
  assert.equal(created.replicas, 1, "unset means 1");
  assert.notEqual(created.etag, "");

  const retried = (
    await a67.deployments.createDeployment({ deployment: web("web"), requestId: "create-web-1" })
  ).deployment!;
  assert.equal(retried.id, created.id, "the same request id creates nothing new");

  const got = (await a67.deployments.getDeployment({ deploymentId: created.id })).deployment!;
  assert.equal(got.image, "nginx:1.27");

  // Only the masked fields change: the image in the request is ignored.
  // The scheduler may have written the pending deployment since the read (its status reason).
  const updated = (
    await withCurrentEtag(got.etag, (etag) =>
      a67.deployments.updateDeployment({
        deployment: { id: created.id, replicas: 3, image: "ignored:1", etag },
        updateMask: { paths: ["replicas"] },
      }),
    )
  ).deployment!;
  assert.equal(updated.replicas, 3);
  assert.equal(updated.image, "nginx:1.27");
  assert.notEqual(updated.etag, got.etag);

  const stale = await rejection(
    a67.deployments.updateDeployment({
      deployment: { id: created.id, image: "nginx:1.28", etag: got.etag },
      updateMask: { paths: ["image"] },
    }),
  );
  assert.equal(stale.code, Code.Aborted);
  assert.equal(stale.reason, "ETAG_MISMATCH");
  const current = stale.metadata.current_etag ?? "";
  assert.ok(current !== "" && current !== got.etag, "the etag to retry with");

  // Retry with the current etag, as a read-modify-write loop does.
  const { deployment: retriedUpdate } = await withCurrentEtag(current, (etag) =>
    a67.deployments.updateDeployment({
      deployment: {
        id: created.id,
        image: "nginx:1.28",
        strategy: PlacementStrategy.BINPACK,
        etag,
      },
      updateMask: { paths: ["image", "strategy"] },
    }),
  );
  assert.equal(retriedUpdate?.image, "nginx:1.28");
  assert.equal(retriedUpdate?.strategy, PlacementStrategy.BINPACK);

  const staleDelete = await rejection(
    a67.deployments.deleteDeployment({ deploymentId: created.id, etag: got.etag }),
  );
  assert.equal(staleDelete.code, Code.Aborted);
  assert.equal(staleDelete.reason, "ETAG_MISMATCH");

  const deleted = await withCurrentEtag(retriedUpdate!.etag, (etag) =>
    a67.deployments.deleteDeployment({ deploymentId: created.id, etag }),
  );
  assert.equal(deleted.deployment?.id, created.id, "AIP-135: the deployment, as it is deleted");
  assert.equal(deleted.deployment?.status, DeploymentStatus.STOPPING);
  // No replica was placed, so nothing has to stop: it is gone soon, STOPPING until then.
  try {
    const left = (await a67.deployments.getDeployment({ deploymentId: created.id })).deployment!;
    assert.equal(left.status, DeploymentStatus.STOPPING);
  } catch (error) {
    assert.ok(Automator67Error.is(error, Code.NotFound, "DEPLOYMENT_NOT_FOUND"), String(error));
  }
});

test("listDeployments iterates every page; filters by name and status", async () => {
  const names = ["list-a", "list-b", "list-c", "list-d"];
  for (const name of names) await a67.deployments.createDeployment({ deployment: web(name) });

  const all = [];
  for await (const d of a67.listDeployments({ pageSize: 1 })) all.push(d.name);
  for (const name of names) assert.ok(all.includes(name), `${name} listed`);
  assert.equal(new Set(all).size, all.length, "no deployment twice");

  const one = [];
  for await (const d of a67.listDeployments({ filter: 'name = "list-c"' })) one.push(d.name);
  assert.deepEqual(one, ["list-c"]);

  const pending = [];
  for await (const d of a67.listDeployments({ filter: "status = PENDING", pageSize: 2 })) {
    pending.push(d);
  }
  assert.ok(pending.length >= names.length);
  assert.ok(pending.every((d) => d.status === DeploymentStatus.PENDING));
});

test("deployment errors: NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, PERMISSION_DENIED", async () => {
  const missing = "00000000-0000-4000-8000-000000000001";
  const notFound = await rejection(a67.deployments.getDeployment({ deploymentId: missing }));
  assert.equal(notFound.code, Code.NotFound);
  assert.equal(notFound.reason, "DEPLOYMENT_NOT_FOUND");
  assert.equal(notFound.metadata.deployment_id, missing);

  const invalid = await rejection(
    a67.deployments.createDeployment({ deployment: { name: "Not A DNS Label", replicas: -1 } }),
  );
  assert.equal(invalid.code, Code.InvalidArgument);
  assert.equal(invalid.reason, "INVALID_FIELD");
  const fields = invalid.fieldViolations.map((v) => v.field);
  assert.ok(fields.includes("deployment.name"), fields.join());
  assert.ok(fields.includes("deployment.replicas"), fields.join());

  await a67.deployments.createDeployment({ deployment: web("taken") });
  const taken = await rejection(a67.deployments.createDeployment({ deployment: web("taken") }));
  assert.equal(taken.code, Code.AlreadyExists);
  assert.equal(taken.reason, "DEPLOYMENT_NAME_TAKEN");

  const viewer = controller.client(await controller.token("viewer"));
  const denied = await rejection(viewer.deployments.createDeployment({ deployment: web("v") }));
  assert.equal(denied.code, Code.PermissionDenied);
  assert.equal(denied.reason, "ROLE_NOT_PERMITTED");
});

test("pause, resume and roll back a rollout through UpdateDeployment", async () => {
  const created = (await a67.deployments.createDeployment({ deployment: web("roll") })).deployment!;
  const v2 = (
    await a67.deployments.updateDeployment({
      deployment: { id: created.id, image: "nginx:1.28" },
      updateMask: { paths: ["image"] },
    })
  ).deployment!;
  assert.equal(v2.templateGeneration, 2n);

  const paused = (
    await a67.deployments.updateDeployment({
      deployment: { id: created.id, paused: true },
      updateMask: { paths: ["paused"] },
    })
  ).deployment!;
  assert.equal(paused.paused, true);
  const refused = await rejection(
    a67.deployments.updateDeployment({
      deployment: { id: created.id },
      rollback: { templateGeneration: 1n },
    }),
  );
  assert.ok(Automator67Error.is(refused, Code.FailedPrecondition, "DEPLOYMENT_PAUSED"));

  const resumed = (
    await a67.deployments.updateDeployment({
      deployment: { id: created.id, paused: false },
      updateMask: { paths: ["paused"] },
    })
  ).deployment!;
  assert.equal(resumed.paused, false);
  const back = (
    await a67.deployments.updateDeployment({
      deployment: { id: created.id },
      rollback: { templateGeneration: 1n },
    })
  ).deployment!;
  assert.equal(back.image, "nginx:1.27");
  assert.equal(back.templateGeneration, 1n);
  assert.equal(back.rolloutHistory.at(-1)?.reason, "ROLLBACK_REQUESTED");

  const unknown = await rejection(
    a67.deployments.updateDeployment({
      deployment: { id: created.id },
      rollback: { templateGeneration: 9n },
    }),
  );
  assert.equal(unknown.code, Code.InvalidArgument);
  assert.deepEqual(
    unknown.fieldViolations.map((v) => v.field),
    ["rollback.template_generation"],
  );
});
