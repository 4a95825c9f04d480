"""The rules of node and deployment specs: every broken rule is reported at once, by its path in
the API request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.errors import InvalidArgumentError
from controller.models import (
    Capabilities,
    Credentials,
    DeploymentSpec,
    NodeSpec,
    PlacementConstraints,
    Resources,
    Secret,
    frozen_map,
)
from controller.registry.validation import (
    MAX_ARG,
    MAX_ARGV,
    MAX_CPU_CORES,
    MAX_DISK_GB,
    MAX_ENV,
    MAX_ENV_VALUE,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_MEMORY_GB,
    MAX_REPLICAS,
    MAX_TIME_MS,
    MAX_TOKEN,
    validate_deployment,
    validate_node,
)

NAN = float("nan")
INF = float("inf")
TEN_MB = "a" * 10_000_000

NODE = NodeSpec(
    provider="render",
    endpoint="https://api.render.com",
    region="us-east-1",
    capabilities=Capabilities(
        cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0, network_bandwidth="1Gbps"
    ),
    labels=frozen_map({"zone": "a", "example.com/owner": "team-a"}),
    credentials=Credentials(Secret("token123"), "github", 1_700_000_000_000),
)

DEPLOYMENT = DeploymentSpec(
    name="web",
    image="nginx:1.27",
    command=("nginx",),
    args=("-g", "daemon off;"),
    env=frozen_map({"PORT": "80", "_X1": ""}),
    resources=Resources(cpu_cores=0.5, memory_gb=1.0, disk_gb=0.0),
    replicas=3,
    constraints=PlacementConstraints("aws", "us-east-1", frozen_map({"zone": "a"})),
)


def violated_fields(error: InvalidArgumentError) -> list[str]:
    return sorted(v.field for v in error.violations)


def caps(**changes: Any) -> Capabilities:
    assert NODE.capabilities is not None
    return replace(NODE.capabilities, **changes)


def creds(**changes: Any) -> Credentials:
    assert NODE.credentials is not None
    return replace(NODE.credentials, **changes)


def test_a_valid_node_passes() -> None:
    validate_node(NODE)


VALID_NODES: dict[str, NodeSpec] = {
    "the minimum": NodeSpec("p", "e", "", Capabilities(0.001, 0.001)),
    "a 63 character provider": replace(NODE, provider="a" * 63),
    "a provider with dots, dashes and underscores": replace(NODE, provider="a.b-c_d"),
    "an empty region": replace(NODE, region=""),
    "an endpoint of 2048 characters": replace(NODE, endpoint="e" * 2048),
    "no credentials": replace(NODE, credentials=None),
    "a token of the maximum length": replace(
        NODE, credentials=creds(oauth_token=Secret("t" * MAX_TOKEN))
    ),
    "no oauth provider": replace(NODE, credentials=creds(oauth_provider="")),
    "zero disk": replace(NODE, capabilities=caps(disk_gb=0.0)),
    "every number at its maximum": replace(
        NODE,
        capabilities=caps(cpu_cores=MAX_CPU_CORES, memory_gb=MAX_MEMORY_GB, disk_gb=MAX_DISK_GB),
        credentials=creds(oauth_expires_at_ms=MAX_TIME_MS),
    ),
    "the maximum number of labels": replace(
        NODE, labels=frozen_map({f"k{i}": "v" for i in range(MAX_LABELS)})
    ),
    "a one character label key": replace(NODE, labels=frozen_map({"k": "v"})),
    "a 63 character label key": replace(NODE, labels=frozen_map({"k" * 63: "v"})),
    "an empty label value": replace(NODE, labels=frozen_map({"k": ""})),
    "a label value of the maximum length": replace(
        NODE, labels=frozen_map({"k": "v" * MAX_LABEL_VALUE})
    ),
}


@pytest.mark.parametrize("spec", VALID_NODES.values(), ids=list(VALID_NODES))
def test_a_valid_node_edge_case_passes(spec: NodeSpec) -> None:
    validate_node(spec)


INVALID_NODES: dict[str, tuple[NodeSpec, list[str]]] = {
    "no provider": (replace(NODE, provider=""), ["node.provider"]),
    "a provider with a space": (replace(NODE, provider="my cloud"), ["node.provider"]),
    "a provider starting with a dash": (replace(NODE, provider="-aws"), ["node.provider"]),
    "a provider with a slash": (replace(NODE, provider="a/b"), ["node.provider"]),
    "a provider of 65 characters": (replace(NODE, provider="a" * 65), ["node.provider"]),
    "a 10 MB provider": (replace(NODE, provider=TEN_MB), ["node.provider"]),
    "no endpoint": (replace(NODE, endpoint=""), ["node.endpoint"]),
    "an endpoint of 2049 characters": (replace(NODE, endpoint="e" * 2049), ["node.endpoint"]),
    "a 10 MB endpoint": (replace(NODE, endpoint=TEN_MB), ["node.endpoint"]),
    "a region with a space": (replace(NODE, region="us east"), ["node.region"]),
    "a 10 MB region": (replace(NODE, region=TEN_MB), ["node.region"]),
    "no capabilities": (replace(NODE, capabilities=None), ["node.capabilities"]),
    "zero cpu": (replace(NODE, capabilities=caps(cpu_cores=0.0)), ["node.capabilities.cpu_cores"]),
    "negative cpu": (
        replace(NODE, capabilities=caps(cpu_cores=-1.0)),
        ["node.capabilities.cpu_cores"],
    ),
    "NaN cpu": (replace(NODE, capabilities=caps(cpu_cores=NAN)), ["node.capabilities.cpu_cores"]),
    "infinite cpu": (
        replace(NODE, capabilities=caps(cpu_cores=INF)),
        ["node.capabilities.cpu_cores"],
    ),
    "1.7e308 cores": (
        replace(NODE, capabilities=caps(cpu_cores=1.7e308)),
        ["node.capabilities.cpu_cores"],
    ),
    "one core more than the maximum": (
        replace(NODE, capabilities=caps(cpu_cores=MAX_CPU_CORES + 1)),
        ["node.capabilities.cpu_cores"],
    ),
    "memory over the maximum": (
        replace(NODE, capabilities=caps(memory_gb=MAX_MEMORY_GB * 2)),
        ["node.capabilities.memory_gb"],
    ),
    "disk over the maximum": (
        replace(NODE, capabilities=caps(disk_gb=1e300)),
        ["node.capabilities.disk_gb"],
    ),
    "an expiry past the year 9999": (
        replace(NODE, credentials=creds(oauth_expires_at_ms=MAX_TIME_MS + 1)),
        ["node.credentials.oauth_expires_at"],
    ),
    "the largest int64 expiry": (
        replace(NODE, credentials=creds(oauth_expires_at_ms=2**63 - 1)),
        ["node.credentials.oauth_expires_at"],
    ),
    "zero memory": (
        replace(NODE, capabilities=caps(memory_gb=0.0)),
        ["node.capabilities.memory_gb"],
    ),
    "minus infinite memory": (
        replace(NODE, capabilities=caps(memory_gb=-INF)),
        ["node.capabilities.memory_gb"],
    ),
    "negative disk": (
        replace(NODE, capabilities=caps(disk_gb=-0.5)),
        ["node.capabilities.disk_gb"],
    ),
    "NaN disk": (replace(NODE, capabilities=caps(disk_gb=NAN)), ["node.capabilities.disk_gb"]),
    "a 65 character bandwidth": (
        replace(NODE, capabilities=caps(network_bandwidth="1" * 65)),
        ["node.capabilities.network_bandwidth"],
    ),
    "an empty token": (
        replace(NODE, credentials=creds(oauth_token=Secret(""))),
        ["node.credentials.oauth_token_encrypted"],
    ),
    "a token one character too long": (
        replace(NODE, credentials=creds(oauth_token=Secret("t" * (MAX_TOKEN + 1)))),
        ["node.credentials.oauth_token_encrypted"],
    ),
    "a 10 MB token": (
        replace(NODE, credentials=creds(oauth_token=Secret(TEN_MB))),
        ["node.credentials.oauth_token_encrypted"],
    ),
    "an oauth provider with a space": (
        replace(NODE, credentials=creds(oauth_provider="git hub")),
        ["node.credentials.oauth_provider"],
    ),
    "a negative expiry": (
        replace(NODE, credentials=creds(oauth_expires_at_ms=-1)),
        ["node.credentials.oauth_expires_at"],
    ),
    "one label too many": (
        replace(NODE, labels=frozen_map({f"k{i}": "v" for i in range(MAX_LABELS + 1)})),
        ["node.labels"],
    ),
    "an empty label key": (replace(NODE, labels=frozen_map({"": "v"})), ["node.labels['']"]),
    "a label key with a space": (
        replace(NODE, labels=frozen_map({"a b": "v"})),
        ["node.labels['a b']"],
    ),
    "a label key ending in a dash": (
        replace(NODE, labels=frozen_map({"zone-": "v"})),
        ["node.labels['zone-']"],
    ),
    "a 64 character label key": (
        replace(NODE, labels=frozen_map({"k" * 64: "v"})),
        [f"node.labels[{'k' * 64!r}]"],
    ),
    "a 10 MB label key is shown cut to 64 characters": (
        replace(NODE, labels=frozen_map({"-" + TEN_MB: "v"})),
        [f"node.labels[{('-' + TEN_MB)[:64]!r}]"],
    ),
    "a label value one character too long": (
        replace(NODE, labels=frozen_map({"zone": "v" * (MAX_LABEL_VALUE + 1)})),
        ["node.labels['zone']"],
    ),
    "a 10 MB label value": (
        replace(NODE, labels=frozen_map({"zone": TEN_MB})),
        ["node.labels['zone']"],
    ),
    "two bad labels": (
        replace(NODE, labels=frozen_map({"ok": "v", "a b": "v", "c": "v" * 300})),
        ["node.labels['a b']", "node.labels['c']"],
    ),
    "everything required missing at once": (
        NodeSpec(provider="", endpoint="", region="", capabilities=None),
        ["node.capabilities", "node.endpoint", "node.provider"],
    ),
    "every number broken at once": (
        replace(NODE, capabilities=Capabilities(NAN, -1.0, -INF, "")),
        [
            "node.capabilities.cpu_cores",
            "node.capabilities.disk_gb",
            "node.capabilities.memory_gb",
        ],
    ),
    "many fields broken at once": (
        NodeSpec(
            provider="a b",
            endpoint=TEN_MB,
            region="-",
            capabilities=Capabilities(0.0, 1.0),
            labels=frozen_map({"": ""}),
            credentials=Credentials(Secret(""), "x y", -5),
        ),
        [
            "node.capabilities.cpu_cores",
            "node.credentials.oauth_expires_at",
            "node.credentials.oauth_provider",
            "node.credentials.oauth_token_encrypted",
            "node.endpoint",
            "node.labels['']",
            "node.provider",
            "node.region",
        ],
    ),
}


@pytest.mark.parametrize(("spec", "fields"), INVALID_NODES.values(), ids=list(INVALID_NODES))
def test_an_invalid_node_names_exactly_the_fields_it_breaks(
    spec: NodeSpec, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_node(spec)
    assert violated_fields(caught.value) == sorted(fields)
    assert all(v.description for v in caught.value.violations)


def test_a_node_path_can_start_at_another_root() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_node(replace(NODE, provider=""), root="nodes[3]")
    assert violated_fields(caught.value) == ["nodes[3].provider"]


def test_a_violation_never_shows_the_token() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_node(replace(NODE, credentials=creds(oauth_token=Secret("s3cr3t" * 2000))))
    assert "s3cr3t" not in str(caught.value)


DESCRIPTIONS: dict[str, tuple[NodeSpec, str]] = {
    "a missing field is required": (replace(NODE, endpoint=""), "is required"),
    "a long field states the limit and the length": (
        replace(NODE, endpoint="e" * 3000),
        "at most 2048 characters (got 3000)",
    ),
    "a NaN must be finite": (replace(NODE, capabilities=caps(cpu_cores=NAN)), "finite"),
    "a zero cpu must be greater than 0": (
        replace(NODE, capabilities=caps(cpu_cores=0.0)),
        "greater than 0",
    ),
    "a negative disk must not be negative": (
        replace(NODE, capabilities=caps(disk_gb=-1.0)),
        "must not be negative",
    ),
    "too many cores states the maximum": (
        replace(NODE, capabilities=caps(cpu_cores=1.7e308)),
        "must be at most 100000",
    ),
}


@pytest.mark.parametrize(("spec", "expected"), DESCRIPTIONS.values(), ids=list(DESCRIPTIONS))
def test_a_violation_says_what_is_wrong(spec: NodeSpec, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_node(spec)
    [violation] = caught.value.violations
    assert expected in violation.description


def test_a_provider_of_64_letters_is_accepted_or_told_it_is_too_long() -> None:
    try:
        validate_node(replace(NODE, provider="a" * 64))
    except InvalidArgumentError as error:
        [violation] = error.violations
        assert "at most" in violation.description, violation.description


def test_a_valid_deployment_passes() -> None:
    validate_deployment(DEPLOYMENT)


VALID_DEPLOYMENTS: dict[str, DeploymentSpec] = {
    "an image and no command": DeploymentSpec(name="a", image="i"),
    "a command and no image": DeploymentSpec(name="a", command=("run",)),
    "a 63 character name": replace(DEPLOYMENT, name="a" * 63),
    "a name of digits": replace(DEPLOYMENT, name="123"),
    "a name with inner dashes": replace(DEPLOYMENT, name="a--b"),
    "zero replicas": replace(DEPLOYMENT, replicas=0),
    "the maximum replicas": replace(DEPLOYMENT, replicas=MAX_REPLICAS),
    "the maximum number of args": replace(DEPLOYMENT, args=("x",) * MAX_ARGV),
    "an arg of the maximum length": replace(DEPLOYMENT, args=("x" * MAX_ARG,)),
    "the maximum number of env vars": replace(
        DEPLOYMENT, env=frozen_map({f"V{i}": "" for i in range(MAX_ENV)})
    ),
    "an env value of the maximum length": replace(
        DEPLOYMENT, env=frozen_map({"V": "x" * MAX_ENV_VALUE})
    ),
    "no constraints": replace(DEPLOYMENT, constraints=PlacementConstraints()),
    "zero resources": replace(DEPLOYMENT, resources=Resources()),
    "resources at their maximum": replace(
        DEPLOYMENT, resources=Resources(MAX_CPU_CORES, MAX_MEMORY_GB, MAX_DISK_GB)
    ),
}


@pytest.mark.parametrize("spec", VALID_DEPLOYMENTS.values(), ids=list(VALID_DEPLOYMENTS))
def test_a_valid_deployment_edge_case_passes(spec: DeploymentSpec) -> None:
    validate_deployment(spec)


def constraints(**changes: Any) -> PlacementConstraints:
    return replace(DEPLOYMENT.constraints, **changes)


INVALID_DEPLOYMENTS: dict[str, tuple[DeploymentSpec, list[str]]] = {
    "no name": (replace(DEPLOYMENT, name=""), ["deployment.name"]),
    "an upper-case name": (replace(DEPLOYMENT, name="Web"), ["deployment.name"]),
    "a name with an underscore": (replace(DEPLOYMENT, name="my_web"), ["deployment.name"]),
    "a name with a dot": (replace(DEPLOYMENT, name="web.1"), ["deployment.name"]),
    "a name starting with a dash": (replace(DEPLOYMENT, name="-web"), ["deployment.name"]),
    "a name ending with a dash": (replace(DEPLOYMENT, name="web-"), ["deployment.name"]),
    "a 64 character name": (replace(DEPLOYMENT, name="a" * 64), ["deployment.name"]),
    "a 10 MB name": (replace(DEPLOYMENT, name=TEN_MB), ["deployment.name"]),
    "no image and no command": (
        replace(DEPLOYMENT, image="", command=()),
        ["deployment.image"],
    ),
    "a 10 MB image": (replace(DEPLOYMENT, image=TEN_MB), ["deployment.image"]),
    "one command item too many": (
        replace(DEPLOYMENT, command=("x",) * (MAX_ARGV + 1)),
        ["deployment.command"],
    ),
    "a 10 MB command item": (
        replace(DEPLOYMENT, command=("ok", TEN_MB)),
        ["deployment.command[1]"],
    ),
    "an arg one character too long": (
        replace(DEPLOYMENT, args=("ok", "ok", "x" * (MAX_ARG + 1))),
        ["deployment.args[2]"],
    ),
    "one env var too many": (
        replace(DEPLOYMENT, env=frozen_map({f"V{i}": "" for i in range(MAX_ENV + 1)})),
        ["deployment.env"],
    ),
    "an env name starting with a digit": (
        replace(DEPLOYMENT, env=frozen_map({"1X": "v"})),
        ["deployment.env['1X']"],
    ),
    "an env name with a dash": (
        replace(DEPLOYMENT, env=frozen_map({"MY-VAR": "v"})),
        ["deployment.env['MY-VAR']"],
    ),
    "an empty env name": (replace(DEPLOYMENT, env=frozen_map({"": "v"})), ["deployment.env['']"]),
    "a 10 MB env value": (
        replace(DEPLOYMENT, env=frozen_map({"BIG": TEN_MB})),
        ["deployment.env['BIG']"],
    ),
    "a bad env name and a long value report both": (
        replace(DEPLOYMENT, env=frozen_map({"A-B": "x" * (MAX_ENV_VALUE + 1)})),
        ["deployment.env['A-B']", "deployment.env['A-B']"],
    ),
    "negative cpu": (
        replace(DEPLOYMENT, resources=Resources(cpu_cores=-1.0)),
        ["deployment.resources.cpu_cores"],
    ),
    "NaN memory": (
        replace(DEPLOYMENT, resources=Resources(memory_gb=NAN)),
        ["deployment.resources.memory_gb"],
    ),
    "infinite disk": (
        replace(DEPLOYMENT, resources=Resources(disk_gb=INF)),
        ["deployment.resources.disk_gb"],
    ),
    "1.7e308 cpu": (
        replace(DEPLOYMENT, resources=Resources(cpu_cores=1.7e308)),
        ["deployment.resources.cpu_cores"],
    ),
    "every resource over its maximum": (
        replace(
            DEPLOYMENT,
            resources=Resources(MAX_CPU_CORES * 2, MAX_MEMORY_GB * 2, MAX_DISK_GB * 2),
        ),
        [
            "deployment.resources.cpu_cores",
            "deployment.resources.disk_gb",
            "deployment.resources.memory_gb",
        ],
    ),
    "negative replicas": (replace(DEPLOYMENT, replicas=-1), ["deployment.replicas"]),
    "the largest int32 replicas": (
        replace(DEPLOYMENT, replicas=2**31 - 1),
        ["deployment.replicas"],
    ),
    "one replica too many": (
        replace(DEPLOYMENT, replicas=MAX_REPLICAS + 1),
        ["deployment.replicas"],
    ),
    "a constraint provider with a space": (
        replace(DEPLOYMENT, constraints=constraints(provider="a b")),
        ["deployment.constraints.provider"],
    ),
    "a 10 MB constraint region": (
        replace(DEPLOYMENT, constraints=constraints(region=TEN_MB)),
        ["deployment.constraints.region"],
    ),
    "a bad constraint label key": (
        replace(DEPLOYMENT, constraints=constraints(labels=frozen_map({"a b": "v"}))),
        ["deployment.constraints.labels['a b']"],
    ),
    "too many constraint labels": (
        replace(
            DEPLOYMENT,
            constraints=constraints(labels=frozen_map({f"k{i}": "" for i in range(65)})),
        ),
        ["deployment.constraints.labels"],
    ),
    "many fields broken at once": (
        DeploymentSpec(
            name="Bad_Name",
            image="",
            env=frozen_map({"1": "v"}),
            resources=Resources(NAN, -1.0, 0.0),
            replicas=-3,
            constraints=PlacementConstraints("a b", "", frozen_map({"-": ""})),
        ),
        [
            "deployment.constraints.labels['-']",
            "deployment.constraints.provider",
            "deployment.env['1']",
            "deployment.image",
            "deployment.name",
            "deployment.replicas",
            "deployment.resources.cpu_cores",
            "deployment.resources.memory_gb",
        ],
    ),
}


@pytest.mark.parametrize(
    ("spec", "fields"), INVALID_DEPLOYMENTS.values(), ids=list(INVALID_DEPLOYMENTS)
)
def test_an_invalid_deployment_names_exactly_the_fields_it_breaks(
    spec: DeploymentSpec, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_deployment(spec)
    assert violated_fields(caught.value) == sorted(fields)
    assert all(v.description for v in caught.value.violations)


def test_the_error_message_lists_every_violation() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_deployment(replace(DEPLOYMENT, name="", replicas=-1))
    message = str(caught.value)
    assert "deployment.name: is required" in message
    assert "deployment.replicas: must be between 0 and 1000" in message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"endpoint": "a\x00b"}, "node.endpoint"),
        ({"labels": frozen_map({"zone": "a\x00"})}, "node.labels['zone']"),
    ],
    ids=["endpoint", "label value"],
)
def test_a_nul_character_is_refused_by_every_store(changes: dict[str, Any], field: str) -> None:
    # PostgreSQL's JSONB cannot hold U+0000; refusing it here keeps the stores interchangeable.
    with pytest.raises(InvalidArgumentError) as caught:
        validate_node(replace(NODE, **changes))
    assert [v.field for v in caught.value.violations] == [field]
