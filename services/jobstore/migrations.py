"""Versioned SQL migrations, applied in order at jobstore start.

Files are `migrations/NNNN_name.sql`; each is applied once, in its own transaction, and recorded in
`schema_migrations`. A session advisory lock serialises jobstores that start at the same time on the
same database: the first applies what is missing, the others wait and then find nothing to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from .queries import Q

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x646F636A6F6273  # "docjobs"
_FILENAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[int]:
    """Apply the missing migrations. Returns the versions this call applied."""
    applied_now: list[int] = []
    await conn.execute(Q.migration_lock, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(Q.create_schema_migrations)
        done = {r["version"] for r in await conn.fetch(Q.applied_migrations)}
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(Q.record_migration, migration.version, migration.name)
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration.version)
    finally:
        await conn.execute(Q.migration_unlock, MIGRATION_LOCK_KEY)
    return applied_now
