"""Leadership on a fake clock and a fake lease store: who leads, stepping down when the lease is
lost or would have run out, and a scheduler that places nothing unless it leads and steps down
when the store refuses its fenced write."""

from __future__ import annotations

import random

import pytest

from controller.clock import FakeClock
from controller.models import DeploymentSpec, Resources
from controller.registry.deployments import DeploymentRegistry
from controller.registry.leadership import LEASE, Leadership, LeadershipSettings
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Sessions
from controller.scheduler.loop import Scheduler, SchedulerSettings
from controller.store.base import Lease, Store

SETTINGS = LeadershipSettings("a", lease_s=9.0, renew_s=3.0)


class FakeLeases:
    """The store's lease, as its owner decides: `holder` holds it in `epoch`."""

    def __init__(self) -> None:
        self.holder, self.epoch, self.ttl_s = "a", 1, 9.0
        self.down = False
        self.asked = 0
        self.alive = {"a", "b"}

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        if self.down:
            raise ConnectionError("the store is down")
        if name != LEASE:  # a replica's own lease: always its own
            return Lease(name, holder, 1, ttl_s)
        self.asked += 1
        return Lease(name, self.holder, self.epoch, self.ttl_s)

    async def leases(self, prefix: str) -> list[Lease]:
        return [Lease(prefix + r, r, 1, 9.0) for r in sorted(self.alive)]


@pytest.fixture
def leases() -> FakeLeases:
    return FakeLeases()


def changes(leadership: Leadership) -> list[tuple[bool, int]]:
    seen: list[tuple[bool, int]] = []
    leadership.on_change.append(lambda leading, epoch: seen.append((leading, epoch)))
    return seen


async def test_the_holder_leads_in_its_epoch_and_fences_with_it(leases: FakeLeases) -> None:
    lead = Leadership(leases, SETTINGS, FakeClock())
    seen = changes(lead)

    await lead.campaign()

    assert lead.leading and lead.leader_id == "a"
    assert lead.fence() is not None and lead.fence().epoch == 1  # type: ignore[union-attr]
    assert seen == [(True, 1)]


async def test_another_holder_means_following(leases: FakeLeases) -> None:
    leases.holder = "b"
    lead = Leadership(leases, SETTINGS, FakeClock())

    await lead.campaign()

    assert not lead.leading and lead.fence() is None and lead.leader_id == "b"


async def test_a_leader_that_cannot_renew_stops_leading_when_its_lease_would_run_out(
    leases: FakeLeases,
) -> None:
    clock = FakeClock()
    lead = Leadership(leases, SETTINGS, clock)
    await lead.campaign()

    clock.advance(8.9)
    assert lead.leading
    clock.advance(0.2)  # frozen past its lease: it must not act, even before it learns more
    assert not lead.leading and lead.fence() is None


async def test_a_failed_renewal_or_a_new_holder_steps_down_at_once(leases: FakeLeases) -> None:
    lead = Leadership(leases, SETTINGS, FakeClock())
    seen = changes(lead)
    await lead.campaign()

    leases.down = True
    with pytest.raises(ConnectionError):
        await lead.campaign()
    assert not lead.leading

    leases.down, leases.epoch = False, 2  # back, in a new term
    await lead.campaign()
    leases.holder, leases.epoch = "b", 3
    await lead.campaign()

    assert seen == [(True, 1), (False, 1), (True, 2), (False, 2)]


async def test_a_follower_places_nothing(store: Store, clock: FakeClock) -> None:
    leases = FakeLeases()
    leases.holder = "b"
    lead = Leadership(leases, SETTINGS, clock)
    await lead.campaign()
    scheduler, deployments = await scheduler_with(store, clock, lead)
    dep = await deployments.create(DeploymentSpec("web", image="x", replicas=1))

    await scheduler.run_once()

    assert deployments.get(dep.id) == dep  # unplaced, unchanged
    assert scheduler.passes == 0


async def test_a_leader_whose_fenced_write_is_refused_steps_down(
    store: Store, clock: FakeClock
) -> None:
    await store.campaign(LEASE, "someone else", 60.0)  # the store's lease is not ours
    leases = FakeLeases()  # but this replica believes it leads
    lead = Leadership(leases, SETTINGS, clock)
    await lead.campaign()
    scheduler, deployments = await scheduler_with(store, clock, lead)
    dep = await deployments.create(
        DeploymentSpec("web", image="x", replicas=1, resources=Resources(0, 0))
    )

    await scheduler.run_once()  # reconciles (marks it), then the store refuses the write

    assert not lead.leading
    assert deployments.get(dep.id) == dep  # nothing it derived was written


async def scheduler_with(
    store: Store, clock: FakeClock, lead: Leadership
) -> tuple[Scheduler, DeploymentRegistry]:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    deployments = DeploymentRegistry(store, clock)
    await deployments.load()
    scheduler = Scheduler(
        deployments,
        nodes,
        Sessions(),
        clock,
        SchedulerSettings(),
        random.Random(1),
        leadership=lead,
    )
    return scheduler, deployments
