"""What the benchmarks share: an embedded Postgres with a fresh database of their own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="also write the figures to FILE as JSON, for a machine to read")


def write_json(path: Path | None, benchmark: str, figures: dict[str, Any], args: argparse.Namespace) -> None:
    """The figures a benchmark printed, with what they were measured with (options, cores, Python)."""
    if path is None:
        return
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    document = {"benchmark": benchmark, "options": options, "cores": os.cpu_count(),
                "python": platform.python_version(), **figures}
    path.write_text(json.dumps(document, indent=2) + "\n")
