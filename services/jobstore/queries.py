"""The jobstore's SQL, loaded by name from queries.sql (the one file that holds all of it)."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--"))
        queries[name] = sql.strip().rstrip(";")
    # The heartbeat of one job whose row was locked when its batch ran: the same statement, waiting its turn.
    waiting = queries["heartbeat"].replace("FOR UPDATE OF d SKIP LOCKED", "FOR UPDATE OF d")
    assert waiting != queries["heartbeat"], "queries.sql: heartbeat no longer skips locked rows"
    queries["heartbeat_waiting"] = waiting
    return queries


class _Queries:
    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None

    def names(self) -> list[str]:
        return sorted(self._queries)


Q = _Queries(_load())
