"""Crash rounds in the spirit of etcd's robustness tests: creates, etag-checked updates and
deletes go to all three replicas on one PostgreSQL while replicas are killed with SIGKILL and
restarted at random. Afterwards every acknowledged write is there (and every acknowledged
delete is not; a delete whose reply a crash ate may have been made or not), no etag check was
lost (each deployment holds the value of its last acknowledged update, or of a later attempt
whose reply the crash ate), and the change log has no repeated revision and no gap."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import deployment_service_pb2_grpc as dsg
from google.protobuf import field_mask_pb2
from grpc import aio

from ..contract import postgres_server
from .conftest import StartController, open_channel
from .controller_process import ControllerProcess
from .test_postgres_store import provision_keys

pytestmark = pytest.mark.skipif(
    postgres_server.unavailable_reason() is not None,
    reason=str(postgres_server.unavailable_reason()),
)

STOPPING = deployment_pb2.DEPLOYMENT_STATUS_STOPPING
ROUNDS = 6  # kills
ROUND_S = 1.5
ARGS = ["--leader-lease-s", "1.5", "--shutdown-grace-s", "1"]


@pytest.fixture(scope="module")
def postgres_module() -> Iterator[None]:
    yield
    postgres_server.stop()


@dataclass
class Ledger:
    """What the clients were told (acknowledged) and what they only tried."""

    created: dict[str, str] = field(default_factory=dict)  # name -> id
    value: dict[str, int] = field(default_factory=dict)  # id -> replicas last acknowledged
    tried: dict[str, set[int]] = field(default_factory=dict)  # id -> values sent after that
    deleted: set[str] = field(default_factory=set)
    # Deletes sent whose reply the crash ate: each may or may not have been made.
    maybe_deleted: set[str] = field(default_factory=set)
    refused_etags: int = 0  # updates refused with ABORTED (a stale etag)


async def writer(
    replica: ControllerProcess, ledger: Ledger, prefix: str, stop: asyncio.Event
) -> None:
    rng = random.Random(prefix)
    count = 0
    while not stop.is_set():
        try:
            async with open_channel(replica.address) as channel:
                stub = dsg.DeploymentServiceStub(channel)
                while not stop.is_set():
                    await one_step(stub, ledger, prefix, count, rng)
                    count += 1
        except (aio.AioRpcError, AssertionError, OSError):
            pass  # the replica died: wait for it to come back
        await asyncio.sleep(0.05)  # a client's retry pause; also while the replica restarts


async def one_step(
    stub: dsg.DeploymentServiceAsyncStub,
    ledger: Ledger,
    prefix: str,
    count: int,
    rng: random.Random,
) -> None:
    mine = [
        i for n, i in ledger.created.items() if n.startswith(prefix) and i not in ledger.deleted
    ]
    action = rng.random()
    if not mine or action < 0.5:
        name = f"{prefix}-{count}"
        created = await stub.CreateDeployment(
            dpb.CreateDeploymentRequest(
                deployment=deployment_pb2.Deployment(name=name, image="x", replicas=0),
                request_id=name,
            ),
            timeout=5,
        )
        ledger.created[name] = created.deployment.id
        ledger.value[created.deployment.id] = 0
        return
    dep_id = rng.choice(mine)
    if action < 0.9:
        current = (
            await stub.GetDeployment(dpb.GetDeploymentRequest(deployment_id=dep_id), timeout=5)
        ).deployment
        # Half the time with an etag a bit old: the store must refuse it if it moved.
        etag = current.etag if rng.random() < 0.5 else str(int(current.etag) - 1)
        value = rng.randint(1, 1_000_000)
        ledger.tried.setdefault(dep_id, set()).add(value)
        change = deployment_pb2.Deployment(id=dep_id, etag=etag, replicas=value)
        try:
            await stub.UpdateDeployment(
                dpb.UpdateDeploymentRequest(
                    deployment=change, update_mask=field_mask_pb2.FieldMask(paths=["replicas"])
                ),
                timeout=5,
            )
        except aio.AioRpcError as error:
            if error.code().name == "ABORTED":
                ledger.refused_etags += 1
                ledger.tried[dep_id].discard(value)
                return
            raise
        ledger.value[dep_id] = value
        ledger.tried[dep_id] = set()
        return
    ledger.maybe_deleted.add(dep_id)
    await stub.DeleteDeployment(dpb.DeleteDeploymentRequest(deployment_id=dep_id), timeout=5)
    ledger.deleted.add(dep_id)


def stopped_then_removed(url: str, dep_id: str) -> bool:
    """Whether the change log holds a STOPPING version of the deployment, then its removal."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT deleted, data->>'status' FROM changes"
            " WHERE kind = 'deployment' AND resource_id = %s ORDER BY revision",
            (dep_id,),
        ).fetchall()
    statuses = [status for deleted, status in rows if not deleted]
    return bool(rows) and bool(rows[-1][0]) and "STOPPING" in statuses


async def test_acknowledged_writes_survive_replicas_killed_at_random(
    start_controller: StartController, data_dir: Path, postgres_module: None
) -> None:
    url = postgres_server.database_url()
    provision_keys(data_dir)
    replicas = [
        start_controller(extra_args=[*ARGS, "--store-url", url, "--replica-id", f"r{i}"])
        for i in (1, 2, 3)
    ]
    ledger, stop = Ledger(), asyncio.Event()
    writers = [
        asyncio.create_task(writer(r, ledger, f"w{i}", stop)) for i, r in enumerate(replicas)
    ]
    rng = random.Random(67)
    try:
        for _ in range(ROUNDS):
            await asyncio.sleep(ROUND_S)  # writes flow meanwhile
            victim = rng.choice(replicas)
            await asyncio.to_thread(victim.kill)
            await asyncio.to_thread(victim.start)
    finally:
        stop.set()
        await asyncio.gather(*writers)

    async with open_channel(replicas[0].address) as channel:
        stub = dsg.DeploymentServiceStub(channel)
        stored: dict[str, deployment_pb2.Deployment] = {}
        token = ""
        while True:
            page = await stub.ListDeployments(
                dpb.ListDeploymentsRequest(page_size=1000, page_token=token)
            )
            stored.update({d.id: d for d in page.deployments})
            token = page.next_page_token
            if not token:
                break
    assert len(ledger.created) >= 20, "too few writes to say anything"
    for name, dep_id in ledger.created.items():
        if dep_id in ledger.deleted:
            # Deleting is STOPPING, then removal (nothing runs): gone, or on its way out.
            assert dep_id not in stored or stored[dep_id].status == STOPPING, name
            continue
        if dep_id in ledger.maybe_deleted and dep_id not in stored:
            # A delete whose reply was lost was made: the log shows it asked (STOPPING), then
            # the removal. Anything else is a lost create.
            assert stopped_then_removed(url, dep_id), f"acknowledged create of {name} lost"
            continue
        assert dep_id in stored, f"acknowledged create of {name} lost"
        allowed = {ledger.value[dep_id], *ledger.tried.get(dep_id, set())}
        assert stored[dep_id].replicas in allowed, (name, stored[dep_id].replicas, allowed)
    assert ledger.refused_etags > 0  # stale etags were sent, and refused

    with psycopg.connect(url) as conn:
        revisions = [r for (r,) in conn.execute("SELECT revision FROM changes ORDER BY revision")]
    assert len(revisions) == len(set(revisions))
    assert revisions == list(range(revisions[0], revisions[0] + len(revisions))), "a gap"
    print(
        f"{len(ledger.created)} creates, {len(ledger.deleted)} deletes, "
        f"{ledger.refused_etags} stale etags refused, {len(revisions)} changes, {ROUNDS} kills"
    )
