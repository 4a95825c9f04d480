"""The request bodies of the original system's README (`seed/`), as users already know them."""

from __future__ import annotations

from typing import Any, TypeVar

from automator67.v1 import deployment_pb2, node_pb2
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# The body of the seed's `curl -X POST /api/v1/nodes` example, key for key.
SEED_NODE_JSON: dict[str, Any] = {
    "provider": "render",
    "endpoint": "https://api.render.com",
    "region": "us-east-1",
    "credentials": {
        "oauthTokenEncrypted": "token123",
        "oauthProvider": "github",
        "oauthExpiresAt": 1700000000000,
    },
    "capabilities": {
        "cpuCores": 4,
        "memoryGb": 8,
        "diskGb": 50,
        "networkBandwidth": "1Gbps",
    },
}
SEED_TOKEN = "token123"


def seed_node(**changes: Any) -> node_pb2.Node:
    """The seed node as a message, with top-level fields replaced by `changes`."""
    node = node_pb2.Node(
        provider="render",
        endpoint="https://api.render.com",
        region="us-east-1",
        credentials=node_pb2.Credentials(
            oauth_token_encrypted=SEED_TOKEN,
            oauth_provider="github",
            oauth_expires_at=1700000000000,
        ),
        capabilities=node_pb2.Capabilities(
            cpu_cores=4, memory_gb=8, disk_gb=50, network_bandwidth="1Gbps"
        ),
    )
    return replaced(node, changes)


def web_deployment(name: str = "web", **changes: Any) -> deployment_pb2.Deployment:
    """A small valid deployment named `name`, with fields replaced by `changes`."""
    deployment = deployment_pb2.Deployment(
        name=name,
        image="nginx:1.27",
        resources=deployment_pb2.Resources(cpu_cores=0.5, memory_gb=0.25),
    )
    return replaced(deployment, changes)


def replaced(message: M, changes: dict[str, Any]) -> M:
    """`message` with the fields named in `changes` set to exactly those values (a value equal
    to the field's default clears it)."""
    for field in changes:
        message.ClearField(field)
    message.MergeFrom(type(message)(**changes))
    return message
