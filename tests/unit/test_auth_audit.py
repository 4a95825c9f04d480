"""Audit lines: which resource a call acted on, and what one line carries."""

from __future__ import annotations

import logging

import pytest
from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import node_service_pb2 as ns

from controller.auth import audit
from controller.auth.principals import Principal, Role

CASES = {
    "a register: the new node's id": (
        ns.RegisterNodeRequest(node=node_pb2.Node(provider="p"), request_id="r-1"),
        ns.RegisterNodeResponse(node=node_pb2.Node(id="n-1"), agent_token="secret"),
        "n-1",
    ),
    "a delete: the request's id": (ns.DeleteNodeRequest(node_id="n-2", etag="3"), None, "n-2"),
    "an update: the resource's id in the request": (
        ds.UpdateDeploymentRequest(deployment=deployment_pb2.Deployment(id="d-1")),
        None,
        "d-1",
    ),
    "a node update (cordon, drain): the node's id, from the response first": (
        ns.UpdateNodeRequest(node=node_pb2.Node(id="n-3", unschedulable=True)),
        ns.UpdateNodeResponse(node=node_pb2.Node(id="n-3", unschedulable=True)),
        "n-3",
    ),
    "a failed create: nothing to name": (
        ds.CreateDeploymentRequest(deployment=deployment_pb2.Deployment(name="web")),
        None,
        "",
    ),
    "a streaming request: nothing to name": (None, None, ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_resource_id(case: str) -> None:
    request, response, expected = CASES[case]
    assert audit.resource_id(request, response) == expected


def test_one_line_names_who_what_result_and_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "controller.audit")

    audit.record(Principal("alice", Role.OPERATOR), "/x.S/DeleteThing", "t-1", "OK", "req-1")
    audit.record(None, "/x.S/DeleteThing", "t-2", "UNAUTHENTICATED", "req-2")

    lines = [r.fields for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [
        {
            "subject": "alice",
            "role": "operator",
            "rpc": "/x.S/DeleteThing",
            "resource_id": "t-1",
            "result": "OK",
            "request_id": "req-1",
        },
        {
            "subject": "",
            "role": "",
            "rpc": "/x.S/DeleteThing",
            "resource_id": "t-2",
            "result": "UNAUTHENTICATED",
            "request_id": "req-2",
        },
    ]
