"""A first script with the Python SDK (sync): register a node, list, get, create and delete a
deployment, and catch a typed error.

    A67_TOKEN=$(automator67 token create --role admin) python quickstart.py 127.0.0.1:50051

It needs only the SDK (`pip install automator67-*.whl`); `mypy --strict` passes on it."""

from __future__ import annotations

import os
import sys

from automator67 import Client, NotFoundError
from automator67.v1 import deployment_pb2, node_pb2

MISSING = "00000000-0000-4000-8000-000000000000"


def main(target: str, token: str) -> int:
    with Client(target, token=token or None, timeout_s=10.0) as client:
        spec = node_pb2.Node(
            provider="bare-metal",
            endpoint="quickstart-host",
            region="eu-west-1",
            capabilities=node_pb2.Capabilities(cpu_cores=2, memory_gb=4),
        )
        registered = client.register_node(spec)
        node = registered.node
        print("registered", node.id, node_pb2.NodeStatus.Name(node.status))

        # Every page, one node at a time: the pager asks for the next page as it goes.
        listed = [n.id for n in client.list_nodes('region = "eu-west-1"', page_size=1)]
        print("listed", len(listed), node.id in listed)
        print("got", client.get_node(node.id).endpoint)

        web = deployment_pb2.Deployment(name="quickstart-web", image="nginx:1.27", replicas=1)
        created = client.create_deployment(web)
        print("created", created.name, deployment_pb2.DeploymentStatus.Name(created.status))
        stopping = client.delete_deployment(created.id)
        print("deleting", deployment_pb2.DeploymentStatus.Name(stopping.status))

        try:
            client.get_node(MISSING)
        except NotFoundError as error:
            print("not found", error.reason, error.metadata.get("node_id", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], os.environ.get("A67_TOKEN", "")))
