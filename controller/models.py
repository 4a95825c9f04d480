"""Domain types: plain frozen dataclasses, no protobuf, no SQL. A change makes a new value."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType


class NodeStatus(enum.Enum):
    """Liveness of a node; names match the proto enum without its prefix."""

    PENDING = "PENDING"
    READY = "READY"
    SUSPECT = "SUSPECT"
    OFFLINE = "OFFLINE"


class DeploymentStatus(enum.Enum):
    """Lifecycle of a deployment; names match the proto enum without its prefix."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class ReplicaState(enum.Enum):
    """Names match the proto enum without its prefix."""

    PENDING = "PENDING"  # not placed
    ASSIGNED = "ASSIGNED"  # placed; its agent has not reported it yet
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FAILED = "FAILED"
    LOST = "LOST"  # its node went OFFLINE


class DesiredState(enum.Enum):
    RUN = "RUN"
    STOP = "STOP"


class PlacementStrategy(enum.Enum):
    """How the scheduler picks among feasible nodes. `DEFAULT` defers to the controller's config."""

    DEFAULT = "DEFAULT"
    SPREAD = "SPREAD"
    BINPACK = "BINPACK"


class Health(enum.Enum):
    """What a replica's health check last said; names match the proto's `ReplicaHealth`."""

    UNSPECIFIED = "UNSPECIFIED"  # no check, or not probed yet
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


class RolloutOutcome(enum.Enum):
    """Names match the proto enum without its prefix."""

    PROGRESSING = "PROGRESSING"
    COMPLETE = "COMPLETE"
    ROLLED_BACK = "ROLLED_BACK"
    SUPERSEDED = "SUPERSEDED"
    FAILED = "FAILED"


class Secret:
    """A string that never shows itself: `repr`, `str` and f-strings print a mask.

    Read the value only where it must cross a boundary (sealing it for the store)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def frozen_map(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """An immutable, sorted copy of a string map (labels, env). A map of one entry or none is
    copied without sorting: most nodes carry one label or none, and a start-up decodes every
    node's (0.8 -> 0.2 us each)."""
    if not items:
        return MappingProxyType({})
    if len(items) == 1:
        return MappingProxyType(dict(items))
    return MappingProxyType(dict(sorted(items.items())))


@dataclass(frozen=True)
class Credentials:
    """Credentials for the provider account behind a node. The token is a `Secret`."""

    oauth_token: Secret
    oauth_provider: str = ""
    oauth_expires_at_ms: int = 0


@dataclass(frozen=True)
class Capabilities:
    cpu_cores: float
    memory_gb: float
    disk_gb: float = 0.0
    network_bandwidth: str = ""


class DrainState(enum.Enum):
    """Names match the proto enum without its prefix."""

    DRAINING = "DRAINING"
    COMPLETE = "COMPLETE"


@dataclass(frozen=True)
class Drain:
    """A node's drain (registry/node_updates.py starts and cancels it). The
    counts and the message are the leader's progress report (scheduler/drainer.py)."""

    start_time: datetime
    deadline: datetime
    state: DrainState = DrainState.DRAINING
    end_time: datetime | None = None
    remaining: int = 0  # replicas still placed on the node
    moved: int = 0  # replicas stopped on the node as they moved elsewhere
    stopped: int = 0  # replicas stopped by the deadline
    message: str = ""


@dataclass(frozen=True)
class Node:
    """A registered node. `revision` is the store revision of its last change (0 = never stored)."""

    id: str
    provider: str
    endpoint: str
    region: str
    capabilities: Capabilities
    create_time: datetime
    update_time: datetime
    labels: Mapping[str, str] = field(default_factory=frozen_map)
    credentials: Credentials | None = None
    status: NodeStatus = NodeStatus.PENDING
    last_heartbeat_time: datetime | None = None
    revision: int = 0
    # The replica holding the node's heartbeat stream, which judges its liveness ("" if none
    # ever did). Internal: it moves with the stream, without a new etag worth showing users.
    holder: str = ""
    unschedulable: bool = False  # cordoned: nothing new is placed on it
    drain: Drain | None = None  # its drain, if one runs or completed


@dataclass(frozen=True)
class Resources:
    cpu_cores: float = 0.0
    memory_gb: float = 0.0
    disk_gb: float = 0.0

    def plus(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_cores + other.cpu_cores,
            self.memory_gb + other.memory_gb,
            self.disk_gb + other.disk_gb,
        )


@dataclass(frozen=True)
class IntOrPercent:
    """A count of replicas, or `value` percent of the replica count (Kubernetes' IntOrString)."""

    value: int
    percent: bool = False

    def of(self, replicas: int, round_up: bool) -> int:
        if not self.percent:
            return self.value
        share = replicas * self.value
        return -(-share // 100) if round_up else share // 100


@dataclass(frozen=True)
class HealthCheck:
    """How agents probe a running replica: `command` (exit 0) or a TCP `tcp_port`."""

    command: tuple[str, ...] = ()
    tcp_port: int = 0
    interval_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class UpdateStrategy:
    """A rolling update's limits (Kubernetes' defaults); see scheduler/rollout.py."""

    max_unavailable: IntOrPercent = IntOrPercent(25, percent=True)  # rounded down
    max_surge: IntOrPercent = IntOrPercent(25, percent=True)  # rounded up
    min_ready_s: int = 0
    progress_deadline_s: int = 600
    revision_history_limit: int = 10


@dataclass(frozen=True)
class Template:
    """What a replica runs: the part of the spec whose change is rolled out replica by replica."""

    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=frozen_map)
    resources: Resources = field(default_factory=Resources)
    health_check: HealthCheck | None = None


@dataclass(frozen=True)
class Rollout:
    """One rollout: the move of every replica to the template introduced by generation
    `template_generation`, started by the spec change that made `generation`."""

    generation: int
    template_generation: int
    template: Template
    start_time: datetime
    end_time: datetime | None = None
    outcome: RolloutOutcome = RolloutOutcome.PROGRESSING
    reason: str = ""  # machine-readable (ROLLOUT_HEALTH_CHECK_FAILED, ROLLBACK, ...)
    message: str = ""
    progress_time: datetime | None = None  # the last time it made progress
    progress_mark: int = 0  # updated and available replicas then


@dataclass(frozen=True)
class PlacementConstraints:
    provider: str = ""
    region: str = ""
    labels: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class Replica:
    """One placement of replica `index`. A deployment keeps at most one current (not
    superseded) placement per index, plus superseded ones until they are stopped."""

    index: int
    node_id: str = ""
    state: ReplicaState = ReplicaState.PENDING
    desired: DesiredState = DesiredState.RUN
    message: str = ""
    failures: int = 0  # in a row
    retry_at: datetime | None = None  # not placed again before this (backoff)
    avoid: tuple[str, ...] = ()  # nodes it failed on
    superseded: bool = False
    state_time: datetime | None = None  # when `state` was entered
    # This placement's own id, new for every placement (scheduler/reconcile.py): agents key
    # their workloads by it and reports are matched by it. "" while unplaced.
    placement_id: str = ""
    generation: int = 0  # the template it runs (Deployment.template_generation); 0: unknown
    health: Health = Health.UNSPECIFIED
    ready_time: datetime | None = None  # since when it runs and passes its check; None: not
    # Superseded on purpose (a rolling update or a drain): it runs until its replacement is
    # available, then stops; it is never restored as the current placement.
    handover: bool = False
    prefer: str = ""  # a node to place it on if it fits there (the one it replaces)
    unschedulable: bool = False  # unplaced because no node fits it (`message` says why)


@dataclass(frozen=True)
class StatusChange:
    status: DeploymentStatus
    reason: str
    time: datetime


@dataclass(frozen=True)
class Deployment:
    """A deployment. `revision` is the store revision of its last change (0 = never stored)."""

    id: str
    name: str
    create_time: datetime
    update_time: datetime
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=frozen_map)
    resources: Resources = field(default_factory=Resources)
    replicas: int = 1
    constraints: PlacementConstraints = field(default_factory=PlacementConstraints)
    strategy: PlacementStrategy = PlacementStrategy.DEFAULT
    status: DeploymentStatus = DeploymentStatus.PENDING
    status_reason: str = ""
    # For programs: UNSCHEDULABLE, REPLICA_FAILING, DELETION_REQUESTED, or "" (summarize).
    status_reason_code: str = ""
    replica_set: tuple[Replica, ...] = ()
    history: tuple[StatusChange, ...] = ()
    update_strategy: UpdateStrategy = field(default_factory=UpdateStrategy)
    health_check: HealthCheck | None = None
    paused: bool = False  # a rollout stops where it is
    generation: int = 1  # grows with every spec change
    observed_generation: int = 0  # the generation the scheduler last acted on
    # The template replicas are moved to, named by the generation that introduced it.
    template_generation: int = 1
    rollouts: tuple[Rollout, ...] = ()  # oldest first
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    revision: int = 0

    @property
    def template(self) -> Template:
        return Template(
            self.image, self.command, self.args, self.env, self.resources, self.health_check
        )

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The nodes its current replicas are placed on, by replica index."""
        placed = sorted(
            (r.index, r.node_id) for r in self.replica_set if r.node_id and not r.superseded
        )
        return tuple(node_id for _, node_id in placed)


@dataclass(frozen=True)
class NodeSpec:
    """What a client supplies to register a node. `capabilities` None means it was left out."""

    provider: str
    endpoint: str
    region: str
    capabilities: Capabilities | None
    labels: Mapping[str, str] = field(default_factory=frozen_map)
    credentials: Credentials | None = None


@dataclass(frozen=True)
class DeploymentSpec:
    """What a client supplies to create a deployment."""

    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=frozen_map)
    resources: Resources = field(default_factory=Resources)
    replicas: int = 1
    constraints: PlacementConstraints = field(default_factory=PlacementConstraints)
    strategy: PlacementStrategy = PlacementStrategy.DEFAULT
    update_strategy: UpdateStrategy = field(default_factory=UpdateStrategy)
    health_check: HealthCheck | None = None
    paused: bool = False
