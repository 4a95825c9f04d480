"""The deployment registry: creation, lookup, listing, updates, deletion, statistics, and the
replica reports of agents. New deployments are stored PENDING; placing them is the scheduler's
work (controller/scheduler/)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from controller.clock import Clock
from controller.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from controller.models import (
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Replica,
    RolloutOutcome,
    StatusChange,
)
from controller.registry import rollouts
from controller.registry.collection import Collection, etag_of, parse_etag
from controller.registry.events import Event
from controller.registry.feed import ChangeFeed
from controller.registry.filtering import enum_normalizer
from controller.registry.idempotency import request_key
from controller.registry.index import Term
from controller.registry.paging import Page
from controller.registry.replicas import (
    DELETION_REQUESTED,
    MAX_HISTORY,
    Report,
    apply_report,
    nodes_of,
)
from controller.registry.validation import validate_deployment, validate_mask
from controller.store.base import Fence, Store

FILTER_FIELDS = {
    "status": enum_normalizer("DEPLOYMENT_STATUS_", [s.value for s in DeploymentStatus]),
    "name": None,
    "provider": None,
    "region": None,
    "node_id": None,
}


def _terms(dep: Deployment) -> Iterable[Term]:
    yield ("status", dep.status.value)
    yield ("name", dep.name)
    yield ("provider", dep.constraints.provider)
    yield ("region", dep.constraints.region)
    for replica in dep.replica_set:
        if replica.node_id:
            yield ("node_id", replica.node_id)


@dataclass(frozen=True)
class DeploymentStats:
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    replicas_requested: int = 0
    replicas_placed: int = 0


class DeploymentRegistry:
    """Owns the deployments. Call `load()` once before serving.

    User changes (create, update, delete) are durable before they return. Changes from agents'
    reports and from the scheduler are staged in memory at once and persisted in batches by the
    scheduler loop (`persist()`), so a beat never waits for the store. Each write and its
    wake-up of the scheduler run whole through `Collection.write`, even if the caller leaves."""

    def __init__(self, store: Store, clock: Clock, feed: ChangeFeed | None = None) -> None:
        self._clock = clock
        self._store = store
        self._deployments = Collection[Deployment](
            "deployment", store.deployments, _terms, FILTER_FIELDS, feed or ChangeFeed(store)
        )
        self._deployments.on_applied.append(self._applied)
        # Called with the nodes whose assignments a change (from any replica) altered: the
        # heartbeat streams of those held here push the new desired set.
        self.on_assignments_changed: list[Callable[[set[str]], None]] = []
        self.events = self._deployments.events
        # Set whenever something the scheduler should look at changed.
        self.changed = asyncio.Event()
        self._touched_nodes: set[str] = set()  # whose assignments a user change altered

    async def load(self) -> None:
        revision = await self._store.revision()
        await self._deployments.load()
        self._deployments.feed.start_at(revision)
        await self._deployments.feed.caught_up()

    def _applied(self, event: Event[Deployment]) -> None:
        self.changed.set()
        touched = nodes_of(event.resource.replica_set)
        if event.previous is not None:
            touched |= nodes_of(event.previous.replica_set)
        if touched:
            for listener in self.on_assignments_changed:
                listener(touched)

    @property
    def revision(self) -> int:
        return self._deployments.revision

    async def create(self, spec: DeploymentSpec, request_id: str = "") -> Deployment:
        validate_deployment(spec)

        async def name_is_free() -> None:
            if next(self._deployments.index.query([("name", spec.name)]), None) is not None:
                raise AlreadyExistsError(
                    f"a deployment named {spec.name!r} already exists",
                    reason="DEPLOYMENT_NAME_TAKEN",
                    metadata={"name": spec.name},
                )

        def build() -> Deployment:
            now = self._clock.now()
            reason = "waiting to be scheduled"
            return Deployment(
                id=str(uuid.uuid4()),
                name=spec.name,
                image=spec.image,
                command=spec.command,
                args=spec.args,
                env=spec.env,
                resources=spec.resources,
                replicas=spec.replicas,
                constraints=spec.constraints,
                strategy=spec.strategy,
                update_strategy=spec.update_strategy,
                health_check=spec.health_check,
                paused=spec.paused,
                status=DeploymentStatus.PENDING,
                status_reason=reason,
                history=(StatusChange(DeploymentStatus.PENDING, reason, now),),
                create_time=now,
                update_time=now,
            )

        def build_first() -> Deployment:
            dep = build()
            return rollouts.first(dep, dep.create_time)

        request = request_key(request_id, spec)

        async def create_locked() -> Deployment:
            created = await self._deployments.create_locked(build_first, request, name_is_free)
            self.changed.set()
            return created

        return await self._deployments.write(create_locked)

    def get(self, deployment_id: str) -> Deployment:
        return self._deployments.get(deployment_id, "deployment_id")

    def list(
        self, filter_text: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[Deployment]:
        return self._deployments.list(filter_text, page_size, page_token)

    def snapshot(self) -> Sequence[Deployment]:
        """Every deployment as last persisted, ordered by id (for watchers)."""
        return [self._deployments.published(d) for d in self._deployments.index.query([])]

    def snapshot_of(self, deployment_id: str) -> Deployment | None:
        dep = self._deployments.index.get(deployment_id)
        return self._deployments.published(dep) if dep is not None else None

    def latest(self) -> Sequence[Deployment]:
        """Every deployment with its staged changes, ordered by id (for the scheduler)."""
        return list(self._deployments.index.query([]))

    async def update(
        self, deployment_id: str, spec: DeploymentSpec, paths: Sequence[str], etag: str = ""
    ) -> Deployment:
        """Changes the fields named in `paths` (an update mask) to their values in `spec`."""
        current = self._current(deployment_id, etag, "deployment.id")
        if current.status is DeploymentStatus.STOPPING:
            raise FailedPreconditionError(
                f"deployment {deployment_id!r} is being deleted", reason="DEPLOYMENT_DELETING"
            )
        validate_mask(paths, UPDATABLE)
        merged = replace(_spec_of(current), **{p: getattr(spec, p) for p in paths})
        validate_deployment(merged)
        changed = [p for p in paths if getattr(merged, p) != getattr(current, p)]
        now = self._clock.now()
        updated = replace(
            current,
            **{p: getattr(merged, p) for p in paths},
            generation=current.generation + (1 if changed else 0),
            update_time=now,
        )
        if any(p in SPEC_FIELDS for p in changed):
            updated = rollouts.begin(updated, updated.template, now)
        elif "paused" in changed and not updated.paused:
            updated = rollouts.resumed(updated, now)
        return await self._write(updated)

    async def rollback(
        self, deployment_id: str, template_generation: int = 0, etag: str = ""
    ) -> Deployment:
        """Restores the template of an earlier rollout (0: the last completed one before the
        current): a new generation that runs it, rolled out like any change."""
        current = self._current(deployment_id, etag, "deployment.id")
        if current.status is DeploymentStatus.STOPPING:
            raise FailedPreconditionError(
                f"deployment {deployment_id!r} is being deleted", reason="DEPLOYMENT_DELETING"
            )
        if current.paused:
            raise FailedPreconditionError(
                f"deployment {deployment_id!r} is paused: resume it before rolling back",
                reason="DEPLOYMENT_PAUSED",
            )
        target = rollouts.rollback_target(current, template_generation)
        if target is None:
            kept = sorted({r.template_generation for r in current.rollouts})
            which = template_generation or "an earlier completed template"
            raise InvalidArgumentError.single(
                "rollback.template_generation",
                f"no {which} to roll back to in the history (kept: {kept}; current: "
                f"{current.template_generation})",
            )
        now = self._clock.now()
        message = (
            f"rolled back to generation {target.template_generation} from generation "
            f"{current.template_generation} on request"
        )
        ended = rollouts.finish(current, RolloutOutcome.ROLLED_BACK, now, "ROLLBACK_REQUESTED")
        if current.rollouts and current.rollouts[-1].outcome is not RolloutOutcome.PROGRESSING:
            ended = current  # it had ended: only the new rollout records the request
        moved = rollouts.begin(
            replace(ended, generation=current.generation + 1, update_time=now),
            target.template,
            now,
            reason="ROLLBACK_REQUESTED",
            message=message,
        )
        return await self._write(moved)

    async def delete(self, deployment_id: str, etag: str = "") -> Deployment:
        """Marks the deployment STOPPING; the scheduler stops its replicas and removes it."""
        current = self._current(deployment_id, etag, "deployment_id")
        if current.status is DeploymentStatus.STOPPING:
            return self._deployments.published(current)
        now = self._clock.now()
        reason = "deletion requested"
        stopping = replace(
            current,
            status=DeploymentStatus.STOPPING,
            status_reason=reason,
            status_reason_code=DELETION_REQUESTED,
            history=(*current.history, StatusChange(DeploymentStatus.STOPPING, reason, now))[
                -MAX_HISTORY:
            ],
            update_time=now,
        )
        return await self._write(stopping)

    async def remove(self, deployment_id: str, fence: Fence | None = None) -> None:
        """Removes a deployment whose replicas have all stopped (the scheduler's last step:
        the leader's, fenced by its epoch)."""
        await self._deployments.write(
            lambda: self._deployments.delete_locked(deployment_id, None, fence)
        )

    def report(self, node_id: str, reports: Iterable[Report]) -> None:
        """Applies an agent's replica reports (in memory; persisted by the scheduler)."""
        now = self._clock.now()
        for report in reports:
            dep = self._deployments.index.get(report.deployment_id)
            if dep is None:
                continue
            changed = apply_report(dep, node_id, report, now)
            if changed is not None:
                self._deployments.stage(changed)
                self.changed.set()

    def stage(self, dep: Deployment) -> None:
        self._deployments.stage(dep)

    async def persist(self, fence: Fence | None = None) -> int:
        return await self._deployments.persist(fence)

    async def settle(self) -> None:
        """Returns once every write begun so far is whole, including those whose callers left."""
        await self._deployments.settle()

    def assignments(self, node_id: str) -> Sequence[tuple[Deployment, Replica]]:
        """Every placement on `node_id`, with its deployment."""
        return [
            (dep, replica)
            for dep in self._deployments.index.query([("node_id", node_id)])
            for replica in dep.replica_set
            if replica.node_id == node_id
        ]

    def count(self) -> int:
        return len(self._deployments.index)

    def stats(self) -> DeploymentStats:
        by_status: Counter[str] = Counter()
        requested = placed = 0
        for dep in self._deployments.index.values():
            by_status[dep.status.value] += 1
            requested += dep.replicas
            placed += len(dep.node_ids)
        return DeploymentStats(len(self._deployments.index), by_status, requested, placed)

    def _current(self, deployment_id: str, etag: str, field: str) -> Deployment:
        current = self._deployments.latest(deployment_id, field)
        expect = parse_etag(etag)
        if expect is not None and expect != current.revision:
            raise ConflictError(
                f"deployment {deployment_id!r} changed since etag {etag} (now {current.revision})",
                metadata={"current_etag": etag_of(current.revision)},
            )
        return current

    def drain_touched_nodes(self) -> set[str]:
        touched, self._touched_nodes = self._touched_nodes, set()
        return touched

    async def _write(self, dep: Deployment) -> Deployment:
        # Staged, then persisted: a change made to the latest in-memory state, never lost to a
        # concurrent staged change from the scheduler or an agent's report.
        self._deployments.stage(dep)
        self._touched_nodes |= nodes_of(dep.replica_set)

        async def persist_locked() -> Deployment:
            # Only this deployment: what the scheduler staged for others is the leader's to
            # write, fenced by its epoch.
            await self._deployments.persist_locked(must_write=dep.id, which=lambda i: i == dep.id)
            self.changed.set()
            return self.get(dep.id)

        return await self._deployments.write(persist_locked)


# The template: a change is rolled out replica by replica (scheduler/rollout.py).
SPEC_FIELDS = frozenset({"image", "command", "args", "env", "resources", "health_check"})
UPDATABLE = SPEC_FIELDS | {"replicas", "constraints", "strategy", "update_strategy", "paused"}


def _spec_of(dep: Deployment) -> DeploymentSpec:
    return DeploymentSpec(
        name=dep.name,
        image=dep.image,
        command=dep.command,
        args=dep.args,
        env=dep.env,
        resources=dep.resources,
        replicas=dep.replicas,
        constraints=dep.constraints,
        strategy=dep.strategy,
        update_strategy=dep.update_strategy,
        health_check=dep.health_check,
        paused=dep.paused,
    )
