"""A writer hands the change feed what it just committed (`ChangeFeed.wrote`): changes that
directly follow the feed's position are applied as the log would give them, without reading the
log back; anything else (a gap: another writer's changes between) is read from the log, so the
feed still applies every change once, in revision order."""

from __future__ import annotations

from controller.registry.feed import ChangeFeed
from controller.store.base import Change


class Log:
    """A change log in memory that counts its reads."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.reads = 0

    def put(self, kind: str, resource_id: str) -> Change:
        change = Change(len(self.changes) + 1, kind, resource_id, False)  # type: ignore[arg-type]
        self.changes.append(change)
        return change

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        self.reads += 1
        return [c for c in self.changes if c.revision > revision][:limit]

    async def wait_for_changes(self, timeout_s: float) -> None:
        return None


class Follower:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.reached_at = 0

    def apply(self, change: Change) -> None:
        self.applied.append(change.revision)

    def reached(self, revision: int) -> None:
        self.reached_at = revision


def feed_on(log: Log) -> tuple[ChangeFeed, Follower, Follower, list[int]]:
    feed = ChangeFeed(log)
    nodes, deployments = Follower(), Follower()
    feed.follow("node", nodes)
    feed.follow("deployment", deployments)
    feed.start_at(0)
    caught_up: list[int] = []
    feed.on_caught_up.append(caught_up.append)
    return feed, nodes, deployments, caught_up


async def test_changes_that_follow_the_position_are_applied_without_reading_the_log() -> None:
    log = Log()
    feed, nodes, deployments, caught_up = feed_on(log)
    written = [log.put("node", f"n{i}") for i in range(3)]

    assert await feed.wrote(written) == 3

    assert log.reads == 0
    assert nodes.applied == [1, 2, 3]
    assert (nodes.reached_at, deployments.reached_at, caught_up) == (3, 3, [3])


async def test_a_gap_before_or_inside_the_changes_is_read_from_the_log_in_order() -> None:
    log = Log()
    feed, nodes, deployments, _ = feed_on(log)
    log.put("deployment", "d1")  # another writer's, not yet applied
    before = [log.put("node", "n2"), log.put("node", "n3")]

    assert await feed.wrote(before) == 3
    assert log.reads == 1
    assert (deployments.applied, nodes.applied) == ([1], [2, 3])

    first = log.put("node", "n4")
    log.put("deployment", "d5")
    last = log.put("node", "n6")
    assert await feed.wrote([first, last]) == 6  # not consecutive: read, d5 applied between
    assert (deployments.applied, nodes.applied) == ([1, 5], [2, 3, 4, 6])


async def test_changes_already_applied_are_not_applied_again() -> None:
    log = Log()
    feed, nodes, _, _ = feed_on(log)
    written = [log.put("node", "n1"), log.put("node", "n2")]
    assert await feed.caught_up() == 2

    assert await feed.wrote(written) == 2
    assert await feed.wrote([]) == 2

    assert nodes.applied == [1, 2]
