"""Durability across restarts: what the server acknowledged is there after SIGTERM and after
SIGKILL, on the same data folder, with the same etags."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from automator67.v1 import (
    deployment_pb2,
    deployment_service_pb2,
    deployment_service_pb2_grpc,
    node_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
)

from .conftest import open_channel
from .controller_process import ControllerProcess
from .deployment_helpers import gone, users_part
from .rpc_errors import rpc_error
from .seed import seed_node, web_deployment


@dataclass
class Snapshot:
    """Everything one controller holds, as its List RPCs return it, keyed by id."""

    nodes: dict[str, node_pb2.Node]
    deployments: dict[str, deployment_pb2.Deployment]
    # The etags the create RPCs returned (not compared: deployments' etags move on).
    etags: set[str] = field(default_factory=set, compare=False)


async def create_some(process: ControllerProcess, prefix: str, count: int = 3) -> Snapshot:
    """Registers `count` nodes and creates `count` deployments; returns what the RPCs returned
    (of deployments, the part the scheduler does not change: `users_part`)."""
    created = Snapshot({}, {})
    async with open_channel(process.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        for i in range(count):
            node = seed_node(labels={"batch": prefix, "n": str(i)})
            registered = await nodes.RegisterNode(node_service_pb2.RegisterNodeRequest(node=node))
            created.nodes[registered.node.id] = registered.node
            created.etags.add(registered.node.etag)
            request = deployment_service_pb2.CreateDeploymentRequest(
                deployment=web_deployment(f"{prefix}-{i}", replicas=i, env={"I": str(i)})
            )
            response = await deployments.CreateDeployment(request)
            created.deployments[response.deployment.id] = users_part(response.deployment)
            created.etags.add(response.deployment.etag)
    return created


async def read_all(process: ControllerProcess) -> Snapshot:
    async with open_channel(process.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        listed_nodes = await nodes.ListNodes(node_service_pb2.ListNodesRequest(page_size=1000))
        listed_deployments = await deployments.ListDeployments(
            deployment_service_pb2.ListDeploymentsRequest(page_size=1000)
        )
    return Snapshot(
        {n.id: n for n in listed_nodes.nodes},
        {d.id: users_part(d) for d in listed_deployments.deployments},
    )


def merged(*snapshots: Snapshot) -> Snapshot:
    result = Snapshot({}, {})
    for snapshot in snapshots:
        result.nodes.update(snapshot.nodes)
        result.deployments.update(snapshot.deployments)
    return result


async def test_everything_created_before_sigterm_is_there_after_a_restart(
    controller: ControllerProcess,
) -> None:
    created = await create_some(controller, "term")

    assert controller.terminate() == 0
    controller.start()

    after = await read_all(controller)
    # Whole messages: ids, specs, statuses, timestamps and etags all survive.
    assert after == created
    serving = controller.log.wait_for(lambda line: line.get("msg") == "serving", 0)
    assert serving["nodes"] == 3


async def test_what_was_acknowledged_before_sigkill_is_there_after_a_restart(
    controller: ControllerProcess,
) -> None:
    before_term = await create_some(controller, "term")
    controller.restart()
    # Each of these RPCs returned before the kill, so each write must be durable.
    before_kill = await create_some(controller, "kill")

    assert controller.kill() == -9
    controller.start()

    assert await read_all(controller) == merged(before_term, before_kill)


async def test_etags_from_before_a_restart_still_guard_deletes(
    controller: ControllerProcess,
) -> None:
    created = await create_some(controller, "etag", count=2)
    (first_node, second_node) = created.nodes.values()
    (first_dep, second_dep) = created.deployments.values()

    controller.kill()
    controller.start()

    async with open_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        got = await nodes.GetNode(node_service_pb2.GetNodeRequest(node_id=second_node.id))
        assert got.node.etag == second_node.etag
        # An etag of another write is still refused; the resource's own etag still works.
        error = await rpc_error(
            nodes.DeleteNode(
                node_service_pb2.DeleteNodeRequest(node_id=second_node.id, etag=first_node.etag)
            )
        )
        assert error.code() == grpc.StatusCode.ABORTED
        await nodes.DeleteNode(
            node_service_pb2.DeleteNodeRequest(node_id=second_node.id, etag=second_node.etag)
        )
        # A deployment's etag moves with every scheduling pass: delete it at its current one.
        current = await deployments.GetDeployment(
            deployment_service_pb2.GetDeploymentRequest(deployment_id=second_dep.id)
        )
        await deployments.DeleteDeployment(
            deployment_service_pb2.DeleteDeploymentRequest(
                deployment_id=second_dep.id, etag=current.deployment.etag
            )
        )
        await gone(deployments, second_dep.id)

    after = await read_all(controller)
    assert after == Snapshot({first_node.id: first_node}, {first_dep.id: first_dep})


async def test_writes_after_a_restart_get_etags_not_issued_before_it(
    controller: ControllerProcess,
) -> None:
    before = await create_some(controller, "old")

    controller.kill()
    controller.start()
    after = await create_some(controller, "new")

    assert not before.etags & after.etags


async def test_a_retry_after_a_restart_returns_what_the_first_call_created(
    controller: ControllerProcess,
) -> None:
    node_request = node_service_pb2.RegisterNodeRequest(node=seed_node(), request_id="node-1")
    deployment_request = deployment_service_pb2.CreateDeploymentRequest(
        deployment=web_deployment(), request_id="deployment-1"
    )
    async with open_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        first_node = await nodes.RegisterNode(node_request)
        first_deployment = await deployments.CreateDeployment(deployment_request)

    controller.kill()
    controller.start()

    async with open_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        retried_node = await nodes.RegisterNode(node_request)
        retried_deployment = await deployments.CreateDeployment(deployment_request)

    assert retried_node.node == first_node.node
    assert users_part(retried_deployment.deployment) == users_part(first_deployment.deployment)
    after = await read_all(controller)
    assert list(after.nodes) == [first_node.node.id]
    assert list(after.deployments) == [first_deployment.deployment.id]
