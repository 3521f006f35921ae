"""The unit tier runs without Postgres, processes or network: whatever a unit test tries of them fails it
at once, naming what it did (the tier's tests belong elsewhere then: see tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"a unit test {what}; unit tests use no Postgres, processes or network: "
                             "this test belongs outside tests/unit/")
    return refused


@pytest.fixture(autouse=True)
def _no_postgres_no_processes_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("starts a process"))
    monkeypatch.setattr(os, "fork", _refuse("forks"))
    monkeypatch.setattr(asyncpg, "connect", _refuse("connects to Postgres"))
    monkeypatch.setattr(asyncpg, "create_pool", _refuse("connects to Postgres"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("opens a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("opens a network connection"))
