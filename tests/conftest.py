"""Fixtures: one real embedded Postgres per test session, a migrated template database cloned for each
test, and real jobstore gRPC servers on loopback ports; and the tiers every test is sorted into.

Tiers (markers registered in pyproject.toml, applied here at collection, so none is ever forgotten):
* unit: the tests in tests/unit/: no Postgres, no processes, no network (tests/unit/conftest.py refuses
  them at run time, and a unit test that asks for the database is refused here); `make test-unit`;
* e2e: a test that starts processes (renderers and their sandboxes, jobstore or gateway processes,
  `docjobs up`, a browser, command-line tools), found in its code, its fixtures' and the test helpers
  they call;
* integration: every other test: a real Postgres and servers in this process, on loopback.
`pytest -m "not e2e"` runs the first two; `make test` runs all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import aiohttp
import asyncpg
import grpc
import pytest

from docjobs.channels import TOKEN_ENV, jobstore_channel, new_token
from docjobs.pgserver import EmbeddedPostgres
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from jobstore.clock import Clock
from jobstore.migrations import migrate
from jobstore.server import JobStoreServer
from jobstore.settings import Settings

from .renderers import RendererProcess

if TYPE_CHECKING:
    from .gateway_client import RunningGateway

TEMPLATE_DB = "docjobs_template"
# The jobstore's shared secret for this test run: the jobstores started here are given it, and every process
# a test starts inherits it (the fixtures that start processes copy this environment).
GRPC_TOKEN = new_token()
os.environ[TOKEN_ENV] = GRPC_TOKEN
T = TypeVar("T")
_db_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
async def _tidy_before_the_loop_closes() -> AsyncIterator[None]:
    """At the very end, while the session's event loop still runs: collect what tests left behind
    (grpc.aio channels and calls that were dropped rather than closed) and stop the loop's thread pool.
    grpc objects collected after their loop has closed can crash the process."""
    yield
    gc.collect()
    await asyncio.get_running_loop().shutdown_default_executor()
    gc.collect()


@pytest.fixture(scope="session")
async def pg(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), max_connections=400)
    server.start()
    # No fsync in the tests' cluster: waiting for the disk at each commit and each database cloned from the
    # template was most of a small test's time (9 ms a commit, 0.3 s a database, on a shared disk). Nothing
    # is lost to a test: no test crashes the machine, and what a killed process wrote is in the page cache
    # either way. Clusters a test starts itself keep the default.
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def template_db(pg: EmbeddedPostgres) -> str:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg.dsn_for(TEMPLATE_DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


async def create_database(pg: EmbeddedPostgres, template: str | None) -> str:
    name = f"test_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(pg.dsn)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await conn.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await conn.close()
    return pg.dsn_for(name)


@pytest.fixture
async def database_url(pg: EmbeddedPostgres, template_db: str) -> str:
    """A fresh, migrated database of this test's own."""
    return await create_database(pg, template_db)


@pytest.fixture
async def empty_database_url(pg: EmbeddedPostgres) -> str:
    return await create_database(pg, None)


def jobstore_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(database_url=database_url, grpc_token=GRPC_TOKEN, grpc_port=0, maintenance_interval_s=0.1,
                    retry_base_ms=200.0, retry_cap_ms=2_000.0, shutdown_grace_s=2.0)
    return replace(base, **overrides)


class RunningJobStore:
    def __init__(self, server: JobStoreServer, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.channel = channel
        self.stub = pb_grpc.JobStoreStub(channel)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def start_jobstore(settings: Settings, clock: Clock | None = None) -> RunningJobStore:
    server = JobStoreServer(settings, clock)
    port = await server.start()
    channel = jobstore_channel(f"127.0.0.1:{port}", settings.grpc_token,
                               options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    return RunningJobStore(server, channel)


class JobStoreFactory(Protocol):
    def __call__(self, clock: Clock | None = None, **overrides: object) -> Awaitable[RunningJobStore]: ...


@pytest.fixture
async def jobstore_factory(database_url: str) -> AsyncIterator[JobStoreFactory]:
    started: list[RunningJobStore] = []

    async def factory(clock: Clock | None = None, **overrides: object) -> RunningJobStore:
        """A jobstore on this test's database; with a clock (jobstore.clock.ManualClock), its decisions by
        time (leases, backoff, due and expiry times, retention) happen at the time the clock says."""
        running = await start_jobstore(jobstore_settings(database_url, **overrides), clock)
        started.append(running)
        interval = overrides.get("maintenance_interval_s", 0.0)
        if isinstance(interval, float) and interval >= 3600:
            # An hour between rounds means "maintenance when the test calls its tick": the round the loop
            # runs at start is finished and no other comes, so a test's tick never finds the lock taken
            # (it then did nothing, and the test read a lease not yet reaped).
            await running.server.maintenance.stop()
        return running

    yield factory
    for running in reversed(started):
        await running.channel.close()
        if not running.server.shutdown.is_set():
            await running.server.stop()


@pytest.fixture
async def jobstore(jobstore_factory: JobStoreFactory) -> RunningJobStore:
    return await jobstore_factory()


@contextlib.asynccontextmanager
async def module_jobstore(pg: EmbeddedPostgres, template_db: str) -> AsyncIterator[RunningJobStore]:
    """A jobstore on a database of its own, for a test module that shares one renderer process among its
    tests (a renderer's start, with its sandbox's warm processes, is most of a small test's time). Such a
    module overrides `jobstore` with a module-scoped fixture that enters this."""
    running = await start_jobstore(jobstore_settings(await create_database(pg, template_db)))
    try:
        yield running
    finally:
        await running.channel.close()
        await running.server.stop()


@pytest.fixture
def stub(jobstore: RunningJobStore) -> pb_grpc.JobStoreAsyncStub:
    return jobstore.stub


@pytest.fixture
async def renderer(jobstore: RunningJobStore, tmp_path: Path) -> AsyncIterator[RendererProcess]:
    """A spec-mode renderer process on the test's jobstore. A test file that needs other settings (code
    mode, short leases) defines its own."""
    process = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    yield process
    await process.shutdown()


@pytest.fixture
async def gateway(jobstore: RunningJobStore) -> AsyncIterator[RunningGateway]:
    """A gateway (JWT auth, tests/gateway_client.py) in front of the test's jobstore. A test file that
    needs other settings defines its own."""
    from .gateway_client import start_gateway  # it imports this module's GRPC_TOKEN

    running = await start_gateway(jobstore.address)
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@overload
async def wait_until(predicate: Callable[[], Awaitable[T | None]], timeout: float = ...,
                     interval: float = ...) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T | None], timeout: float = ..., interval: float = ...) -> T: ...
async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll a condition (sync or async) until it holds; fails the test with a timeout otherwise. Returns
    what the condition returned when it held (the value itself, not a bool)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


TIERS = ("unit", "integration", "e2e")
UNIT_DIR = Path(__file__).resolve().parent / "unit"
# What starts a process, by the names a test, its fixtures or a test helper they call refer to.
PROCESS_NAMES = frozenset({
    "subprocess", "Popen", "create_subprocess_exec", "create_subprocess_shell", "multiprocessing", "fork",
    "RendererProcess", "JobStoreProcess", "GatewayProcess", "Sandbox", "async_playwright", "sync_playwright",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue  # marked by hand
        item.add_marker(getattr(pytest.mark, tier_of(item)))


def tier_of(item: pytest.Item) -> str:
    if item.path.is_relative_to(UNIT_DIR):
        if "pg" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid} uses the database (fixture pg): unit tests use no Postgres; "
                                    "move it out of tests/unit/")
        return "unit"
    return "e2e" if starts_processes(item) else "integration"


def starts_processes(item: pytest.Item) -> bool:
    functions: list[Any] = [getattr(item, "function", None)]
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is not None:
        functions += [d.func for defs in fixture_info.name2fixturedefs.values() for d in defs]
    seen: set[CodeType] = set()
    return any(_refers_to_processes(f, seen) for f in functions if f is not None)


def _refers_to_processes(function: Callable[..., Any], seen: set[CodeType]) -> bool:
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    namespace = getattr(function, "__globals__", {})
    for name in _names(code):
        if name in PROCESS_NAMES:
            return True
        target = namespace.get(name)
        if str(getattr(target, "__module__", None) or "").startswith("tests.") and any(
                _refers_to_processes(f, seen) for f in _functions_of(target)):
            return True
    return False


def _names(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):  # nested functions, lambdas, comprehensions
            yield from _names(const)


def _functions_of(target: Any) -> Iterable[Callable[..., Any]]:
    if inspect.isclass(target):
        return [getattr(v, "__func__", v) for v in vars(target).values()
                if inspect.isfunction(getattr(v, "__func__", v))]
    return [target] if inspect.isfunction(target) else []


# grpc's C core keeps threads of its own (the aio poller, executor threads of finished tests); while the
# interpreter finalizes modules they can race its teardown and crash the process after every test has
# passed and been reported (seen about one run in five). Once pytest has reported, the test process
# ends at once with pytest's own exit status.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _EXIT_STATUS and not hasattr(config, "workerinput"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[0])


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory the user nobody may write, outside pytest's temporary directories (private themselves)."""
    directory = Path(tempfile.mkdtemp(prefix="docjobs-nonroot-"))
    directory.chmod(0o755)
    shutil.chown(directory, "nobody", "nogroup")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
