"""The jobstore's SQL lives in queries.sql, by name: no statement is written in its Python modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jobstore
from jobstore.queries import Q

PACKAGE = Path(jobstore.__file__).parent
# A string that starts like a statement. LISTEN and NOTIFY also start log lines ("LISTEN connection
# lost"), so for them a channel name must follow and then the end, a comma or a semicolon.
STATEMENT = re.compile(
    r"^\s*(?:(?:SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|SET|RESET|BEGIN|COMMIT|ROLLBACK)\s"
    r"|(?:LISTEN|UNLISTEN|NOTIFY)\s+(?:\w+|\{\})\s*(?:[,;]|$))")


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # an f-string: its literal parts, "{}" for each value
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def statements_in(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    docstrings = {id(body[0].value) for body in (getattr(n, "body", None) for n in ast.walk(tree))
                  if isinstance(body, list) and body and isinstance(body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr):  # string constants and f-strings are expressions
            continue
        text = _text(node)
        if text is not None and id(node) not in docstrings and STATEMENT.match(text):
            found.append((node.lineno, text.strip().splitlines()[0]))
    return found


def test_no_sql_in_the_jobstores_python() -> None:
    found = [f"{path.name}:{line}: {text}" for path in sorted(PACKAGE.rglob("*.py"))
             for line, text in statements_in(path.read_text(encoding="utf-8"))]
    assert not found, "move these into queries.sql as named queries:\n" + "\n".join(found)


def test_the_check_sees_statements_and_leaves_prose_alone() -> None:
    source = '''
"""LISTEN/NOTIFY as a doorbell."""
async def f(conn, channel, payload):
    """SELECT the docstring is prose."""
    log.warning("LISTEN connection lost; reconnecting")
    await conn.execute("SELECT 1")
    await conn.execute(f"NOTIFY {channel}, '{payload}'")
    await conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    await conn.execute("LISTEN docjobs_events")
'''
    assert [line for line, _ in statements_in(source)] == [6, 7, 8, 9]


def test_the_queries_moved_in_are_there() -> None:
    for name in ("ping", "notify", "migration_lock", "migration_unlock", "create_schema_migrations",
                 "applied_migrations", "record_migration"):
        assert name in Q.names()
