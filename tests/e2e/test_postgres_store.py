"""The controller on the PostgreSQL store: a real controller process started with
`--store-url postgresql://...` against a real PostgreSQL server (`tests/contract/postgres_server`)
keeps what it acknowledged across a restart, and `keys reencrypt`'s resealing works on it.
Skipped where PostgreSQL cannot run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from controller.auth.keys import signing_keys
from controller.config import parse_config
from controller.crypto import AesGcmSealer, load_sealer, new_key
from controller.errors import ConflictError
from controller.models import Capabilities, Credentials, Node, Secret
from controller.store import reencrypt_credentials
from controller.store.postgres import PostgresStore

from ..contract import postgres_server
from .conftest import StartController
from .seed import SEED_TOKEN
from .test_restart import create_some, read_all


@pytest.fixture(scope="module")
def postgres_module() -> Iterator[None]:
    """Stops the PostgreSQL server after this module, if it started one."""
    yield
    postgres_server.stop()


@pytest.fixture
def store_url(postgres_module: None) -> str:
    """A new, empty database."""
    return postgres_server.database_url()


def provision_keys(data_dir: Path) -> None:
    """Replicas on a shared store never generate keys (each would have its own): an operator
    provisions them. Here, the data dir's default key files, made as the embedded store would."""
    config = parse_config(["--data-dir", str(data_dir)], {})
    load_sealer(config, generate=True)
    signing_keys(config, generate=True)


async def test_nodes_and_deployments_survive_a_restart_on_postgres(
    start_controller: StartController, data_dir: Path, store_url: str
) -> None:
    provision_keys(data_dir)
    controller = start_controller(extra_args=["--store-url", store_url])
    created = await create_some(controller, "pg", count=2)

    assert controller.terminate() == 0
    controller.start()

    assert await read_all(controller) == created
    serving = controller.log.wait_for(lambda line: line.get("msg") == "serving", 0)
    assert serving["nodes"] == 2
    # Everything is in PostgreSQL: no embedded store was created beside the keys.
    assert not list(data_dir.glob("*.db"))  # noqa: ASYNC240  # one small folder
    with psycopg.connect(store_url) as conn:
        rows = conn.execute("SELECT id, data::text FROM nodes ORDER BY id").fetchall()
        (changes,) = conn.execute("SELECT count(*) FROM changes").fetchone() or (0,)
    assert sorted(created.nodes) == [node_id for node_id, _ in rows]
    # Credentials are sealed at rest, as on SQLite.
    assert all(SEED_TOKEN not in document for _, document in rows)
    assert changes >= 4


def stored_key_ids(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, data->'credentials'->>'key_id' FROM nodes").fetchall()
    return {node_id: key_id for node_id, key_id in rows}


async def test_reencrypt_reseals_postgres_credentials_without_new_revisions(
    store_url: str,
) -> None:
    old, new = new_key(), new_key()
    store = PostgresStore(store_url, AesGcmSealer([old]))
    await store.open()
    await store.nodes.create(credentialed_node("a", "token-a"))
    await store.nodes.create(credentialed_node("b", None))
    await store.close()
    store = PostgresStore(store_url, AesGcmSealer([old, new]))
    await store.open()
    await store.nodes.create(credentialed_node("c", "token-c"))
    revision = await store.revision()

    report = await reencrypt_credentials(store, AesGcmSealer([old, new]))
    await store.close()

    assert (report.resealed, report.current, report.key_id) == (1, 1, new.id)
    assert stored_key_ids(store_url) == {"a": new.id, "b": None, "c": new.id}
    only_new = PostgresStore(store_url, AesGcmSealer([new]))  # the old key is no longer needed
    await only_new.open()
    try:
        assert await only_new.revision() == revision  # no new revision, no event
        node = await only_new.nodes.get("a")
    finally:
        await only_new.close()
    assert node is not None and node.credentials is not None
    assert node.credentials.oauth_token.reveal() == "token-a"


def credentialed_node(node_id: str, token: str | None) -> Node:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Node(
        id=node_id,
        provider="render",
        endpoint="https://api.render.com",
        region="eu",
        capabilities=Capabilities(1, 1, 0, ""),
        credentials=Credentials(Secret(token), "github", 0) if token else None,
        create_time=now,
        update_time=now,
    )


async def test_two_replicas_on_one_database_share_one_revision_counter_and_check_etags(
    store_url: str,
) -> None:
    replicas = [PostgresStore(store_url), PostgresStore(store_url)]
    await asyncio.gather(*(replica.open() for replica in replicas))  # migrations run once
    try:
        created = await asyncio.gather(
            *(replicas[i % 2].nodes.create(credentialed_node(f"n{i:02}", None)) for i in range(40))
        )
        revisions = sorted(node.revision for node in created)
        assert len(set(revisions)) == 40
        changes = await replicas[0].changes_since(0)
        assert [c.revision for c in changes] == revisions
        assert await replicas[1].revision() == revisions[-1]

        # Both replicas update one node at the revision they read: exactly one wins.
        node = created[0]
        results = await asyncio.gather(
            *(
                replicas[i % 2].nodes.update(replace(node, region=f"r{i}"), node.revision)
                for i in range(10)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
        assert await replicas[1].nodes.get(node.id) == winners[0]
    finally:
        await asyncio.gather(*(replica.close() for replica in replicas))
