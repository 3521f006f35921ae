"""The unit tier's guard and the tiers' markers do what tests/conftest.py says."""

from __future__ import annotations

import socket
import subprocess
import sys

import asyncpg
import pytest


def test_a_unit_test_cannot_start_a_process_or_reach_postgres_or_the_network() -> None:
    with pytest.raises(AssertionError, match="starts a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(AssertionError, match="connects to Postgres"):
        _ = asyncpg.connect("postgresql://nobody@127.0.0.1:1/none")  # refused at the call, before a coroutine
    with socket.socket() as sock, pytest.raises(AssertionError, match="network connection"):
        sock.connect(("127.0.0.1", 1))


def test_unit_tests_are_marked_unit(request: pytest.FixtureRequest) -> None:
    assert [m.name for m in request.node.iter_markers() if m.name in ("unit", "integration", "e2e")] == ["unit"]


def _a_helper_that_starts_a_process() -> None:
    _two_calls_down()


def _two_calls_down() -> None:
    subprocess.run(["true"], check=True)


def _a_pure_helper() -> int:
    return 1


def test_a_test_that_starts_a_process_through_helpers_is_found() -> None:
    from ..conftest import _refers_to_processes

    assert _refers_to_processes(lambda: _a_helper_that_starts_a_process(), set())
    assert not _refers_to_processes(lambda: _a_pure_helper(), set())
