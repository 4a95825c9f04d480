"""Who calls (a `Principal`: subject and role) and what each role may call (the permission table).

    admin     everything
    operator  deployments (read and write), nodes (read)
    viewer    read only: Get, List, Watch, Stats, and server reflection
    node      only AgentService/Heartbeat, and only for the node id in its token's subject
              (checked by the heartbeat stream against the hello)
    agent-bootstrap
              only NodeService/RegisterNode: the shared secret of agents joining the fleet
              (a DaemonSet's Secret), as Kubernetes' bootstrap tokens or Nomad's node-write
              policy. It reads nothing and streams nothing: each agent then uses the node
              token RegisterNode returned for its own node

Health checking is open to everyone. An RPC this table does not know is admin-only, so a new RPC
is never open by accident; new automator67.v1 RPCs follow the verb rule below."""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    NODE = "node"
    AGENT_BOOTSTRAP = "agent-bootstrap"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. For a node token, `subject` is the node id."""

    subject: str
    role: Role
    token_id: str = ""  # the token's `jti`, for audit lines

    @property
    def node_id(self) -> str | None:
        return self.subject if self.role is Role.NODE else None


# The principal of the RPC being served, set by the auth interceptor for the whole call (None
# when authentication is off). Read it where a rule needs the caller (the heartbeat hello).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
NODE_SERVICE = "automator67.v1.NodeService"
DEPLOYMENT_SERVICE = "automator67.v1.DeploymentService"
AGENT_SERVICE = "automator67.v1.AgentService"
HEARTBEAT = f"/{AGENT_SERVICE}/Heartbeat"
REGISTER_NODE = f"/{NODE_SERVICE}/RegisterNode"

_READ_VERBS = ("Get", "List", "Watch")
_READERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})
_ADMIN = frozenset({Role.ADMIN})
# (readers, writers) per service; a method is a read when its name starts with a read verb.
_SERVICES: dict[str, tuple[frozenset[Role], frozenset[Role]]] = {
    NODE_SERVICE: (_READERS, _ADMIN),
    DEPLOYMENT_SERVICE: (_READERS, frozenset({Role.ADMIN, Role.OPERATOR})),
}


@dataclass(frozen=True)
class Rule:
    """Who may call one RPC. `roles` is None for an open RPC; `mutating` calls are audited."""

    roles: frozenset[Role] | None
    mutating: bool


# The rules are few and immutable: each call gets a shared one (a heartbeat stream holds its
# rule for its whole life, so a new one per call cost ~300 bytes per stream).
_OPEN = Rule(None, mutating=False)
_REFLECTION = Rule(_READERS, mutating=False)
# Beats change liveness, but a line per beat would drown the audit log; the stream's open and
# close are logged by the heartbeat stream itself.
_HEARTBEAT = Rule(frozenset({Role.ADMIN, Role.NODE}), mutating=False)
_REGISTER = Rule(frozenset({Role.ADMIN, Role.AGENT_BOOTSTRAP}), mutating=True)
_SERVICE_RULES = {
    service: (Rule(readers, mutating=False), Rule(writers, mutating=True))
    for service, (readers, writers) in _SERVICES.items()
}
_OTHER = Rule(_ADMIN, mutating=True)


def rule_for(method: str) -> Rule:
    """The rule for a full method name, `/package.Service/Method`."""
    service, _, name = method.lstrip("/").partition("/")
    if service == HEALTH_SERVICE:
        return _OPEN
    if service in REFLECTION_SERVICES:
        return _REFLECTION
    if method == HEARTBEAT:
        return _HEARTBEAT
    if method == REGISTER_NODE:
        return _REGISTER
    rules = _SERVICE_RULES.get(service)
    if rules is not None:
        read, write = rules
        return read if name.startswith(_READ_VERBS) else write
    return _OTHER


def allowed(principal: Principal, rule: Rule) -> bool:
    return rule.roles is None or principal.role in rule.roles


def node_of_caller() -> str | None:
    """The node id of the node token serving the current call; None for any other caller (and
    when authentication is off)."""
    principal = current_principal.get()
    return principal.node_id if principal is not None else None
