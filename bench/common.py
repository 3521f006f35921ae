"""What the benchmarks share: an embedded Postgres with a fresh database of their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from docjobs.channels import TOKEN_ENV, new_token
from docjobs.pgserver import EmbeddedPostgres

# The jobstore's shared secret for this run; the processes a benchmark starts inherit it (a worker process
# of compare.py keeps its parent's).
GRPC_TOKEN = os.environ.setdefault(TOKEN_ENV, new_token())


@contextlib.contextmanager
def benchmark_database() -> Iterator[tuple[Path, str]]:
    """(a scratch directory, the DSN of an empty database on a just-started embedded Postgres)."""
    with tempfile.TemporaryDirectory(prefix="docjobs-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        pg.start()
        try:
            asyncio.run(_create(pg.dsn))
            yield Path(tmp), pg.dsn_for("bench")
        finally:
            pg.stop()


async def _create(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE DATABASE bench")
    finally:
        await conn.close()
