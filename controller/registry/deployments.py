"""The deployment registry: creation, lookup, listing, deletion and statistics.

New deployments are stored PENDING; placing them is the scheduler's work."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.clock import Clock
from controller.errors import AlreadyExistsError
from controller.models import Deployment, DeploymentSpec, DeploymentStatus
from controller.registry.collection import Collection
from controller.registry.filtering import enum_normalizer
from controller.registry.idempotency import request_key
from controller.registry.index import Term
from controller.registry.paging import Page
from controller.registry.validation import validate_deployment
from controller.store.base import Store

FILTER_FIELDS = {
    "status": enum_normalizer("DEPLOYMENT_STATUS_", [s.value for s in DeploymentStatus]),
    "name": None,
    "provider": None,
    "region": None,
}


def _terms(dep: Deployment) -> Iterable[Term]:
    yield ("status", dep.status.value)
    yield ("name", dep.name)
    yield ("provider", dep.constraints.provider)
    yield ("region", dep.constraints.region)


@dataclass(frozen=True)
class DeploymentStats:
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    replicas_requested: int = 0
    replicas_placed: int = 0


class DeploymentRegistry:
    """Owns the deployments. Call `load()` once before serving."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._clock = clock
        self._deployments = Collection[Deployment](
            "deployment", store.deployments, _terms, FILTER_FIELDS
        )

    async def load(self, revision: int) -> None:
        await self._deployments.load(revision)

    async def create(self, spec: DeploymentSpec, request_id: str = "") -> Deployment:
        validate_deployment(spec)

        async def name_is_free() -> None:
            if next(self._deployments.index.query([("name", spec.name)]), None) is not None:
                raise AlreadyExistsError(f"a deployment named {spec.name!r} already exists")

        def build() -> Deployment:
            now = self._clock.now()
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
                status=DeploymentStatus.PENDING,
                status_reason="waiting to be scheduled",
                create_time=now,
                update_time=now,
            )

        request = request_key(request_id, spec)
        return await self._deployments.create(build, request, name_is_free)

    def get(self, deployment_id: str) -> Deployment:
        return self._deployments.get(deployment_id, "deployment_id")

    def list(
        self, filter_text: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[Deployment]:
        return self._deployments.list(filter_text, page_size, page_token)

    async def delete(self, deployment_id: str, etag: str = "") -> None:
        await self._deployments.delete(deployment_id, etag, "deployment_id")

    def stats(self) -> DeploymentStats:
        by_status: Counter[str] = Counter()
        requested = placed = 0
        for dep in self._deployments.index.values():
            by_status[dep.status.value] += 1
            requested += dep.replicas
            placed += len(dep.node_ids)
        return DeploymentStats(len(self._deployments.index), by_status, requested, placed)
