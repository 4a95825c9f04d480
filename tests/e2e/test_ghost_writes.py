"""Clients that give up mid-write leave no ghosts: hundreds of RegisterNode, CreateDeployment,
UpdateDeployment and DeleteDeployment calls with deadlines of 1-50 ms, then every view agrees.

A write is whole or absent everywhere: List, Get and a watch show the same resources; a retry
with a request id returns the resource if and only if List showed it (and creates it if not:
never "has since been deleted", never ALREADY_EXISTS for a name nobody can see); and a restart
on the same data shows exactly the same."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from automator67.v1 import deployment_pb2, deployment_service_pb2_grpc, node_service_pb2_grpc
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as npb
from google.protobuf import field_mask_pb2
from grpc import aio

from .conftest import open_channel
from .controller_process import ControllerProcess
from .deployment_helpers import users_part, wait_for_view
from .heartbeat_helpers import Watch, list_all_nodes
from .rpc_errors import rpc_error
from .seed import seed_node, web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

NODES = 160  # RegisterNode calls, each with its own request id
CREATES = 160  # CreateDeployment calls, each with its own name and request id
TARGETS = 40  # deployments created first, then updated and deleted by impatient clients
UPDATES_PER_TARGET = 3
DELETED_TARGETS = 20
BATCH = 24  # calls in flight at once: enough to queue writes, few enough to reach the server
DEADLINES_S = (0.001, 0.05)
OK = grpc.StatusCode.OK
GAVE_UP = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
STOPPING = deployment_pb2.DEPLOYMENT_STATUS_STOPPING


@dataclass
class Ledger:
    """What the impatient clients asked for."""

    nodes: dict[str, npb.RegisterNodeRequest] = field(default_factory=dict)  # by request id
    creates: dict[str, dpb.CreateDeploymentRequest] = field(default_factory=dict)
    images: dict[str, set[str]] = field(default_factory=dict)  # target id -> images it may have
    deleted: set[str] = field(default_factory=set)  # targets whose DeleteDeployment said OK
    codes: dict[str, set[grpc.StatusCode]] = field(default_factory=dict)  # by RPC


@dataclass
class Views:
    """What a controller shows once every view agreed: request id -> resource id, and every
    deployment's user-set part by id."""

    nodes: dict[str, str]
    deployments: dict[str, str]
    contents: dict[str, deployment_pb2.Deployment]
    node_ids: set[str]


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as error:
        return error.code()
    return OK


async def impatient_calls(
    nodes: NodeServiceAsyncStub, deployments: DeploymentServiceAsyncStub, targets: list[str]
) -> Ledger:
    """Fires every call, shuffled, in batches, each with a deadline of 1-50 ms."""
    rng = random.Random(67)
    ledger = Ledger(images={t: {"nginx:1.27"} for t in targets})
    calls: list[tuple[str, Callable[..., Awaitable[Any]], Any]] = []  # (rpc, method, request)
    for i in range(NODES):
        register = npb.RegisterNodeRequest(
            node=seed_node(labels={"n": str(i)}), request_id=f"node-{i}"
        )
        ledger.nodes[register.request_id] = register
        calls.append(("RegisterNode", nodes.RegisterNode, register))
    for i in range(CREATES):
        create = dpb.CreateDeploymentRequest(
            deployment=web_deployment(f"impatient-{i}"), request_id=f"create-{i}"
        )
        ledger.creates[create.request_id] = create
        calls.append(("CreateDeployment", deployments.CreateDeployment, create))
    for n, target in enumerate(targets):
        for k in range(UPDATES_PER_TARGET):
            image = f"nginx:1.{28 + k}"
            ledger.images[target].add(image)
            update = dpb.UpdateDeploymentRequest(
                deployment=deployment_pb2.Deployment(id=target, image=image),
                update_mask=field_mask_pb2.FieldMask(paths=["image"]),
            )
            calls.append(("UpdateDeployment", deployments.UpdateDeployment, update))
        if n < DELETED_TARGETS:
            delete = dpb.DeleteDeploymentRequest(deployment_id=target)
            calls.append(("DeleteDeployment", deployments.DeleteDeployment, delete))
    rng.shuffle(calls)

    async def one(rpc: str, method: Callable[..., Awaitable[Any]], request: Any) -> None:
        code = await outcome(method(request, timeout=rng.uniform(*DEADLINES_S)))
        ledger.codes.setdefault(rpc, set()).add(code)
        if rpc == "DeleteDeployment" and code == OK:
            ledger.deleted.add(request.deployment_id)

    for start in range(0, len(calls), BATCH):
        await asyncio.gather(*(one(*call) for call in calls[start : start + BATCH]))
    return ledger


async def list_deployments(
    stub: DeploymentServiceAsyncStub,
) -> dict[str, deployment_pb2.Deployment]:
    listed = await stub.ListDeployments(dpb.ListDeploymentsRequest(page_size=1000))
    assert not listed.next_page_token
    return {d.id: users_part(d) for d in listed.deployments}


async def agreeing_views(channel: aio.Channel, ledger: Ledger, *, first: bool) -> Views:
    """Checks that every view agrees and returns it. The first time, a request whose write is
    absent is retried (and must then succeed); later, every retry must return what it did."""
    nodes = node_service_pb2_grpc.NodeServiceStub(channel)
    deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
    # Deleted deployments leave once a scheduling pass removes them (they have no replicas).
    watched = await wait_for_view(
        deployments, lambda view: all(d.status != STOPPING for d in view.values()), 30.0
    )
    listed = await list_deployments(deployments)
    assert {i: users_part(d) for i, d in watched.items()} == listed  # a watcher sees List
    for dep_id, dep in listed.items():
        got = await deployments.GetDeployment(dpb.GetDeploymentRequest(deployment_id=dep_id))
        assert users_part(got.deployment) == dep
    node_watch = Watch(nodes)
    try:
        node_view, _ = await node_watch.state()
    finally:
        await node_watch.close()
    node_ids = set(await list_all_nodes(nodes))
    assert set(node_view) == node_ids

    for target, images in ledger.images.items():
        if target in ledger.deleted:
            assert target not in listed
        if target in listed:
            assert listed[target].image in images

    views = Views({}, {}, listed, node_ids)
    by_name = {d.name: d.id for d in listed.values()}
    for request_id, create in ledger.creates.items():
        shown = by_name.get(create.deployment.name)
        if shown is None:
            assert first, f"{create.deployment.name} vanished after a restart"
        else:  # the name is taken: a create of it by someone else is refused
            other = dpb.CreateDeploymentRequest(deployment=create.deployment)
            error = await rpc_error(deployments.CreateDeployment(other))
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error
        # A retry returns what List shows; if List shows nothing, the create happens now.
        retried = await deployments.CreateDeployment(create)
        assert shown is None or retried.deployment.id == shown, request_id
        views.deployments[request_id] = retried.deployment.id
    for request_id, register in ledger.nodes.items():
        registered = await nodes.RegisterNode(register)
        node_id = registered.node.id
        assert node_id in node_ids or first, f"{request_id} made a node after a restart"
        views.nodes[request_id] = node_id
    views.contents = await list_deployments(deployments)
    views.node_ids = set(await list_all_nodes(nodes))
    return views


async def test_writes_of_clients_that_gave_up_are_whole_or_absent_in_every_view(
    controller: ControllerProcess,
) -> None:
    async with open_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        targets = []
        for i in range(TARGETS):
            request = dpb.CreateDeploymentRequest(deployment=web_deployment(f"target-{i}"))
            targets.append((await deployments.CreateDeployment(request)).deployment.id)

        ledger = await impatient_calls(nodes, deployments, targets)

        # Many gave up, and nothing failed in a way a client that waited would not see.
        assert GAVE_UP & ledger.codes["CreateDeployment"], ledger.codes
        assert ledger.codes["RegisterNode"] <= {OK, *GAVE_UP}, ledger.codes
        assert ledger.codes["CreateDeployment"] <= {OK, *GAVE_UP}, ledger.codes
        allowed = {OK, *GAVE_UP, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
        assert ledger.codes["UpdateDeployment"] <= allowed, ledger.codes
        assert ledger.codes["DeleteDeployment"] <= allowed, ledger.codes

        before = await agreeing_views(channel, ledger, first=True)
        assert set(before.nodes.values()) == before.node_ids  # every node is some request's
        assert set(before.deployments.values()) <= set(before.contents)

    controller.restart()
    async with open_channel(controller.address) as channel:
        after = await agreeing_views(channel, ledger, first=False)
    assert after == before
