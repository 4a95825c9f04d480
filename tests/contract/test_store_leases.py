"""The store's named leases, which elect the leader: one holder at a time, an epoch that only
grows, renewal by the holder only, takeover once the lease has run out, and fenced writes that
the store refuses once their lease is no longer held (in the write's own transaction)."""

from __future__ import annotations

import asyncio

import pytest

from controller.errors import FencedError
from controller.store.base import Fence, Store

from .conftest import new_deployment

LEADER = "leader"


async def test_the_first_campaign_takes_the_lease_and_a_rival_does_not(store: Store) -> None:
    mine = await store.campaign(LEADER, "a", ttl_s=30)
    theirs = await store.campaign(LEADER, "b", ttl_s=30)

    assert (mine.holder, mine.epoch) == ("a", 1)
    assert 29 < mine.ttl_left_s <= 30
    assert (theirs.holder, theirs.epoch) == ("a", 1)  # b learns who leads


async def test_the_holder_renews_in_the_same_epoch(store: Store) -> None:
    first = await store.campaign(LEADER, "a", ttl_s=5)
    renewed = await store.campaign(LEADER, "a", ttl_s=30)

    assert (renewed.holder, renewed.epoch) == ("a", first.epoch)
    assert renewed.ttl_left_s > 25


async def test_a_lease_that_ran_out_goes_to_the_next_one_in_a_new_epoch(store: Store) -> None:
    first = await store.campaign(LEADER, "a", ttl_s=0.2)
    await asyncio.sleep(0.3)  # the lease's own clock: nothing else to wait for

    taken = await store.campaign(LEADER, "b", ttl_s=30)
    stale = await store.campaign(LEADER, "a", ttl_s=30)

    assert (taken.holder, taken.epoch) == ("b", first.epoch + 1)
    assert (stale.holder, stale.epoch) == ("b", first.epoch + 1)


async def test_a_holder_back_after_its_lease_ran_out_starts_a_new_epoch(store: Store) -> None:
    first = await store.campaign(LEADER, "a", ttl_s=0.2)
    await asyncio.sleep(0.3)

    again = await store.campaign(LEADER, "a", ttl_s=30)

    assert (again.holder, again.epoch) == ("a", first.epoch + 1)


async def test_a_fenced_write_passes_while_the_lease_is_held(store: Store) -> None:
    lease = await store.campaign(LEADER, "a", ttl_s=30)
    dep = await store.deployments.create(new_deployment())

    [written] = await store.deployments.update_many([dep], fence=Fence(LEADER, "a", lease.epoch))

    assert written is not None and written.revision > dep.revision


async def test_a_deposed_leaders_write_is_refused_and_changes_nothing(store: Store) -> None:
    old = await store.campaign(LEADER, "a", ttl_s=0.2)
    dep = await store.deployments.create(new_deployment())
    await asyncio.sleep(0.3)
    await store.campaign(LEADER, "b", ttl_s=30)
    revision = await store.revision()

    with pytest.raises(FencedError):
        await store.deployments.update_many([dep], fence=Fence(LEADER, "a", old.epoch))

    assert await store.revision() == revision
    assert await store.deployments.get(dep.id) == dep


async def test_a_write_fenced_by_a_lease_that_ran_out_is_refused(store: Store) -> None:
    lease = await store.campaign(LEADER, "a", ttl_s=0.2)
    dep = await store.deployments.create(new_deployment())
    await asyncio.sleep(0.3)  # frozen past its lease; nobody took it yet

    with pytest.raises(FencedError):
        await store.deployments.update_many([dep], fence=Fence(LEADER, "a", lease.epoch))


async def test_leases_lists_the_live_ones_under_a_prefix(store: Store) -> None:
    await store.campaign("replica/a", "a", ttl_s=30)
    await store.campaign("replica/b", "b", ttl_s=0.2)
    await store.campaign("other", "c", ttl_s=30)
    await asyncio.sleep(0.3)  # b's lease runs out

    live = await store.leases("replica/")

    assert [(lease.name, lease.holder) for lease in live] == [("replica/a", "a")]


async def test_a_deposed_leaders_delete_is_refused(store: Store) -> None:
    old = await store.campaign(LEADER, "a", ttl_s=0.2)
    dep = await store.deployments.create(new_deployment())
    await asyncio.sleep(0.3)
    await store.campaign(LEADER, "b", ttl_s=30)

    with pytest.raises(FencedError):
        await store.deployments.delete(dep.id, fence=Fence(LEADER, "a", old.epoch))

    assert await store.deployments.get(dep.id) == dep
