"""docjobs side by side with the Postgres job queues a Python team would pick instead: PgQueuer and
Procrastinate (run by `make bench`, never by `make test`).

One embedded Postgres (fsync on), one database per system, the same no-op job, the same number of
worker processes, and the same number of jobs in flight per process:
  - docjobs through its real path: a jobstore process, workers on work sessions (Work: jobs pushed within
    the credit of their free slots, completions as messages on the same stream) over gRPC, as renderers
    are; the workers never touch the database;
  - PgQueuer: workers running QueueManager.run() on an asyncpg connection;
  - Procrastinate: workers running App.run_worker_async() on a psycopg pool.
For each: jobs/s to work through N pre-enqueued jobs (from the first job started, in any worker, to the
moment the database shows every job finished), and enqueue-to-start latency for single jobs with one
idle worker (the enqueuing client notes the time just before its enqueue call; the worker, on receiving
the job, reports the difference). Then pgbench's commit rate on the same server, as the ceiling.

Each system runs --rounds times (3), the systems taking turns, and each figure printed is the median of
its rounds; beside them, the CPU time each part spent per job while the queue drained (Postgres, the
worker processes, docjobs' jobstore), and docjobs' targets against PgQueuer.

Usage: python bench/compare.py [--jobs N] [--rounds K] [--processes P] [--in-flight F] [--latency-rounds R]
(`--worker SYSTEM` runs one worker process; the benchmark starts those itself.)
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# bench/ comes off the path: bench/queue.py must not shadow the standard library's queue. The checkout's
# root goes last, for bench.common and tests.processes.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.append(str(ROOT))

from bench.common import GRPC_TOKEN, add_json_option, benchmark_database, write_json  # noqa: E402

SYSTEMS = ("docjobs", "pgqueuer", "procrastinate")
JOB_TYPE = "noop"


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(kind: str, value: float | str) -> None:
    print(f"{kind} {value}", flush=True)


# --- workers (one process each) --------------------------------------------------------------------------

class Reporter:
    """What a worker tells the benchmark: READY, FIRST <time of its first job>, LAT <seconds>."""

    def __init__(self) -> None:
        self.first = False

    def job(self, payload: dict[str, Any]) -> None:
        now = time.time()
        if not self.first:
            self.first = True
            report("FIRST", now)
        if payload.get("t0"):
            report("LAT", now - payload["t0"])


async def docjobs_worker(address: str, in_flight: int) -> None:
    from docjobs.channels import jobstore_channel
    from docjobs.v1 import jobstore_pb2 as pb
    from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
    from docjobs.worksession import WorkSession

    reporter = Reporter()
    # A connection per session (grpc would share one between channels to one address): with several jobstore
    # processes on the port, the kernel spreads connections, not calls.
    own = [("grpc.use_local_subchannel_pool", 1)]
    async with jobstore_channel(address, GRPC_TOKEN, options=own) as first, \
            jobstore_channel(address, GRPC_TOKEN, options=own) as second:
        stubs = [pb_grpc.JobStoreStub(first), pb_grpc.JobStoreStub(second)]
        for stub in stubs:
            await stub.GetStats(pb.GetStatsRequest(), wait_for_ready=True)
        finishing: set[asyncio.Future[None]] = set()

        def session(k: int) -> WorkSession:
            async def finish(claimed: pb.ClaimedJob) -> None:
                work.grant(1)  # the slot is free once the job is done: the credit rides on its completion
                await work.complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token))

            def took(jobs: list[pb.ClaimedJob]) -> None:
                for claimed in jobs:
                    reporter.job(json.loads(claimed.job.payload_json))
                    task = asyncio.ensure_future(finish(claimed))
                    finishing.add(task)
                    task.add_done_callback(finishing.discard)

            # Jobs pushed within the credit of its free slots, completions as messages on the same stream
            # (the jobstore completes those that arrive together in one statement).
            work = WorkSession(stubs[k], f"bench-{os.getpid()}-{k}", [JOB_TYPE], 60_000, on_jobs=took)
            work.start()
            work.grant(in_flight // 2)
            return work

        sessions = [session(0), session(1)]
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in sessions)), 30)
        report("READY", os.getpid())
        await asyncio.Event().wait()


async def pgqueuer_worker(dsn: str, in_flight: int) -> None:
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

    reporter = Reporter()
    connection = await asyncpg.connect(dsn)
    manager = QueueManager(queries=Queries(AsyncpgDriver(connection)))

    @manager.entrypoint(JOB_TYPE)
    async def noop(job: Job) -> None:
        reporter.job(json.loads(job.payload or b"{}"))

    report("READY", os.getpid())
    await manager.run(batch_size=in_flight // 2, max_concurrent_tasks=in_flight,
                      dequeue_timeout=timedelta(seconds=30))


def procrastinate_app(dsn: str) -> Any:
    import logging

    import procrastinate

    # It warns that an App made in a __main__ module cannot be found by its CLI; the benchmark needs none.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def procrastinate_worker(dsn: str, in_flight: int) -> None:
    app = procrastinate_app(dsn)
    reporter = Reporter()

    @app.task(name=JOB_TYPE, queue=JOB_TYPE)
    async def noop(t0: float = 0.0) -> None:
        reporter.job({"t0": t0})

    async with app.open_async():
        report("READY", os.getpid())
        await app.run_worker_async(queues=[JOB_TYPE], concurrency=in_flight, wait=True, install_signal_handlers=False)


# --- the benchmark -----------------------------------------------------------------------------------------

class Workers:
    """Worker processes of one system, and what they report."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.ready = 0
        self.first: list[float] = []
        self.latencies: asyncio.Queue[float] = asyncio.Queue()

    async def start(self, count: int, argv: list[str]) -> None:
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(sys.executable, __file__, *argv,
                                                           stdout=asyncio.subprocess.PIPE)
            self.processes.append(process)
            self.readers.append(asyncio.create_task(self._read(process)))
        while self.ready < count:
            await asyncio.sleep(0.01)
            if any(r.done() for r in self.readers):
                raise SystemExit(f"a worker exited early: {argv}")

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            kind, _, value = line.decode().strip().partition(" ")
            if kind == "READY":
                self.ready += 1
            elif kind == "FIRST":
                self.first.append(float(value))
            elif kind == "LAT":
                self.latencies.put_nowait(float(value) * 1000)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()
        for reader in self.readers:
            reader.cancel()


class System(abc.ABC):
    """How the benchmark enqueues into, and sees the end of the work of, one system."""

    name = ""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @abc.abstractmethod
    async def setup(self) -> None: ...
    @abc.abstractmethod
    async def enqueue_many(self, n: int) -> None: ...
    @abc.abstractmethod
    async def enqueue_one(self, t0: float) -> None: ...
    @abc.abstractmethod
    async def unfinished(self, conn: asyncpg.Connection) -> bool:
        """Whether a job is still to do or in progress. Asked every 10 ms while the workers drain the queue, so
        it must cost the database next to nothing: an indexed look for one row, never a count of the table
        (a count of docjobs' 8,000 rows took 3.6 ms, a fifth of a core at that rate, taken from the workers)."""
    @abc.abstractmethod
    def worker_argv(self, in_flight: int) -> list[str]: ...
    @abc.abstractmethod
    async def close(self) -> None: ...

    def server_cpu_s(self) -> float | None:
        """CPU seconds the system's own server processes have used (None: it has none but Postgres)."""
        return None


class Docjobs(System):
    name = "docjobs"
    processes = 1  # DOCJOBS_JOBSTORE_PROCESSES (--jobstore-processes)

    async def setup(self) -> None:
        from docjobs.channels import jobstore_channel
        from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
        from tests.processes import JobStoreProcess

        self.store = JobStoreProcess(self.dsn, env={"DOCJOBS_LOG_LEVEL": "warning",
                                                    "DOCJOBS_JOBSTORE_PROCESSES": str(self.processes)}).start()
        await asyncio.to_thread(self.store.wait_healthy)
        self.channel = jobstore_channel(self.store.address, GRPC_TOKEN)
        self.stub = pb_grpc.JobStoreStub(self.channel)

    async def enqueue_many(self, n: int) -> None:
        from docjobs.v1 import jobstore_pb2 as pb

        # As PgQueuer's is measured: one call per 1,000 jobs, one after another (EnqueueMany), answered with
        # each job's id and state (JOB_VIEW_BASIC), as PgQueuer answers with the ids.
        for start in range(0, n, 1000):
            await self.stub.EnqueueMany(pb.EnqueueManyRequest(view=pb.JOB_VIEW_BASIC, jobs=[
                pb.EnqueueRequest(job_type=JOB_TYPE, user_id=f"u{i % 50}", payload_json="{}")
                for i in range(start, min(n, start + 1000))]))

    async def enqueue_one(self, t0: float) -> None:
        from docjobs.v1 import jobstore_pb2 as pb

        await self.stub.Enqueue(pb.EnqueueRequest(job_type=JOB_TYPE, user_id="lat",
                                                  payload_json=json.dumps({"t0": t0})))

    async def unfinished(self, conn: asyncpg.Connection) -> bool:
        # Each status through its own partial index (the claim's and the reaper's).
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM document_jobs WHERE status = 'pending') "
                                        "OR EXISTS (SELECT 1 FROM document_jobs WHERE status = 'processing')"))

    def worker_argv(self, in_flight: int) -> list[str]:
        return ["--worker", "docjobs", "--address", self.store.address, "--in-flight", str(in_flight)]

    def server_cpu_s(self) -> float | None:
        assert self.store.process is not None
        return cpu_seconds([self.store.process.pid])

    async def close(self) -> None:
        await self.channel.close()
        await asyncio.to_thread(self.store.terminate)


class PgQueuer(System):
    name = "pgqueuer"

    async def setup(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = await asyncpg.connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()

    async def enqueue_many(self, n: int) -> None:
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            await self.queries.enqueue([JOB_TYPE] * size, [b"{}"] * size, [0] * size)

    async def enqueue_one(self, t0: float) -> None:
        await self.queries.enqueue(JOB_TYPE, json.dumps({"t0": t0}).encode())

    async def unfinished(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer)"))

    def worker_argv(self, in_flight: int) -> list[str]:
        return ["--worker", "pgqueuer", "--dsn", self.dsn, "--in-flight", str(in_flight)]

    async def close(self) -> None:
        await self.conn.close()


class Procrastinate(System):
    name = "procrastinate"

    async def setup(self) -> None:
        self.app = procrastinate_app(self.dsn)

        @self.app.task(name=JOB_TYPE, queue=JOB_TYPE)
        async def noop(t0: float = 0.0) -> None: ...

        self.task = noop
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def enqueue_many(self, n: int) -> None:
        for start in range(0, n, 1000):
            await self.task.batch_defer_async(*[{} for _ in range(min(1000, n - start))])

    async def enqueue_one(self, t0: float) -> None:
        await self.task.defer_async(t0=t0)

    async def unfinished(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"))

    def worker_argv(self, in_flight: int) -> list[str]:
        return ["--worker", "procrastinate", "--dsn", self.dsn, "--in-flight", str(in_flight)]

    async def close(self) -> None:
        await self.app.close_async()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants (those still running)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                total += sum(process.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
    return total


async def postgres_server_pid(conn: asyncpg.Connection) -> int:
    """The postmaster: the parent of this connection's backend (every backend and helper is its child)."""
    import psutil

    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
    parent = backend.parent()
    assert parent is not None
    return parent.pid


async def measure(system: System, args: argparse.Namespace) -> dict[str, float]:
    await system.setup()
    conn = await asyncpg.connect(system.dsn)
    try:
        postgres = await postgres_server_pid(conn)
        started = time.perf_counter()
        await system.enqueue_many(args.jobs)
        enqueue_rate = args.jobs / (time.perf_counter() - started)
        workers = Workers()
        await workers.start(args.processes, system.worker_argv(args.in_flight))
        # CPU time, not wall time: on a shared machine it moves much less than jobs/s does. Read from the
        # workers' start (idle in their wait for work) to the last job's end; Postgres's includes this loop's
        # look for unfinished jobs every 10 ms (an indexed look for one row: next to nothing).
        worker_pids = [p.pid for p in workers.processes]
        cpu_before = (cpu_seconds([postgres]), cpu_seconds(worker_pids), system.server_cpu_s())
        while await system.unfinished(conn):
            await asyncio.sleep(0.01)
            if any(r.done() for r in workers.readers):
                raise SystemExit(f"a {system.name} worker exited")
        done = time.time()
        cpu_after = (cpu_seconds([postgres]), cpu_seconds(worker_pids), system.server_cpu_s())
        await workers.stop()
        throughput = args.jobs / (done - min(workers.first))

        idle = Workers()
        await idle.start(1, system.worker_argv(args.in_flight))
        await asyncio.sleep(0.5)  # parked in its wait for work
        samples = []
        for _ in range(args.latency_rounds):
            await system.enqueue_one(time.time())
            samples.append(await asyncio.wait_for(idle.latencies.get(), 30))
            if any(r.done() for r in idle.readers):
                raise SystemExit(f"the {system.name} worker exited")
            await asyncio.sleep(0.02)
        await idle.stop()
    finally:
        await conn.close()
        await system.close()
    per_job = 1000 / args.jobs
    figures = {"jobs_per_s": throughput, "start_p50_ms": statistics.median(samples),
               "start_p99_ms": percentile(samples, 99), "enqueue_bulk_per_s": enqueue_rate,
               "postgres_cpu_ms_per_job": (cpu_after[0] - cpu_before[0]) * per_job,
               "workers_cpu_ms_per_job": (cpu_after[1] - cpu_before[1]) * per_job}
    if cpu_before[2] is not None and cpu_after[2] is not None:
        figures["server_cpu_ms_per_job"] = (cpu_after[2] - cpu_before[2]) * per_job
    figures["cpu_ms_per_job"] = (figures["postgres_cpu_ms_per_job"] + figures["workers_cpu_ms_per_job"]
                                 + figures.get("server_cpu_ms_per_job", 0.0))
    return figures


def pgbench(dsn: str, clients: int, seconds: int) -> float:
    """Commits/s of one-statement write transactions (an UPDATE of one random row), pgbench's own
    measure of the server's commit rate."""
    from docjobs.pgserver import POSTGRES_BIN_PATH

    address = re.match(r"postgresql://\w+@([\d.]+):(\d+)/", dsn)
    assert address is not None, dsn
    host, port = address.groups()
    base = ["-h", host, "-p", port, "-U", "postgres"]
    subprocess.run([str(POSTGRES_BIN_PATH / "createdb"), *base, "pgbench"], check=True)
    subprocess.run([str(POSTGRES_BIN_PATH / "pgbench"), *base, "-i", "-q", "-s", "10", "pgbench"], check=True,
                   capture_output=True)
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"docjobs-commit-{os.getpid()}.sql"
    script.write_text("\\set aid random(1, 1000000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 "
                      "WHERE aid = :aid;\n")
    try:
        out = subprocess.run([str(POSTGRES_BIN_PATH / "pgbench"), *base, "-n", "-c", str(clients), "-j", "2",
                              "-T", str(seconds), "-f", str(script), "pgbench"], check=True, capture_output=True,
                             text=True).stdout
    finally:
        script.unlink()
    tps = re.search(r"tps = ([\d.]+)", out)
    assert tps is not None, out
    return float(tps.group(1))


async def create_databases(admin_dsn: str, names: list[str]) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for name in names:
            await conn.execute(f"CREATE DATABASE {name}")
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    report("POSTGRES", version)


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("pgqueuer", "procrastinate", "asyncpg", "psycopg",
                                                             "grpcio"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each system, taking turns; medians")
    parser.add_argument("--processes", type=int, default=2, help="worker processes per system")
    parser.add_argument("--in-flight", type=int, default=20, help="jobs in flight per worker process")
    parser.add_argument("--latency-rounds", type=int, default=200)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--worker", choices=SYSTEMS)
    parser.add_argument("--dsn")
    parser.add_argument("--address")
    parser.add_argument("--jobstore-processes", type=int, default=1,
                        help="DOCJOBS_JOBSTORE_PROCESSES of docjobs' jobstore (its workers connect several times)")
    add_json_option(parser)
    args = parser.parse_args()
    Docjobs.processes = args.jobstore_processes
    if args.worker:
        import uvloop

        worker = {"docjobs": lambda: docjobs_worker(args.address, args.in_flight),
                  "pgqueuer": lambda: pgqueuer_worker(args.dsn, args.in_flight),
                  "procrastinate": lambda: procrastinate_worker(args.dsn, args.in_flight)}[args.worker]
        uvloop.run(worker())
        return

    systems: dict[str, type[System]] = {"docjobs": Docjobs, "pgqueuer": PgQueuer, "procrastinate": Procrastinate}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.only}
    with benchmark_database() as (_tmp, bench_dsn):
        server = bench_dsn.rsplit("/", 1)[0]
        asyncio.run(create_databases(f"{server}/postgres", [f"{name}_{k}" for k in range(args.rounds)
                                                           for name in args.only]))
        # The systems take turns, round after round, so a machine that slows down or speeds up over the
        # minutes of the benchmark weighs on each alike; each figure is then the median of its rounds.
        for k in range(args.rounds):
            for name in args.only:
                runs[name].append(asyncio.run(measure(systems[name](f"{server}/{name}_{k}"), args)))
                print(f"  {name}, round {k + 1} of {args.rounds}: done", file=sys.stderr, flush=True)
        ceiling = pgbench(f"{server}/postgres", clients=8, seconds=args.pgbench_seconds)
    results = {name: {key: statistics.median(run[key] for run in figures) for key in figures[0]}
               for name, figures in runs.items()}

    print(f"\nPostgres job queues side by side: {args.jobs} no-op jobs, {args.processes} worker processes x "
          f"{args.in_flight} jobs in flight, {os.cpu_count()} cores, one embedded Postgres (fsync on), "
          f"docjobs with {args.jobstore_processes} jobstore process(es); each figure the median of "
          f"{args.rounds} round(s), the systems taking turns")
    print(f"versions: {versions()}")
    print(f"{'system':15s} {'jobs/s':>9s} {'enqueue/s':>10s} {'start p50':>10s} {'start p99':>10s}   "
          f"CPU ms per job: {'all':>5s} {'Postgres':>9s} {'workers':>8s} {'server':>7s}")
    for name, r in results.items():
        server_cpu = f"{r['server_cpu_ms_per_job']:7.3f}" if "server_cpu_ms_per_job" in r else f"{'-':>7s}"
        print(f"{name:15s} {r['jobs_per_s']:9.0f} {r['enqueue_bulk_per_s']:10.0f} {r['start_p50_ms']:8.2f}ms "
              f"{r['start_p99_ms']:8.2f}ms   {'':15s} {r['cpu_ms_per_job']:5.3f} "
              f"{r['postgres_cpu_ms_per_job']:9.3f} {r['workers_cpu_ms_per_job']:8.3f} {server_cpu}")
    if args.rounds > 1:
        for name, figures in runs.items():
            print(f"  {name} by round: jobs/s " + ", ".join(f"{f['jobs_per_s']:.0f}" for f in figures)
                  + "; start p50 " + ", ".join(f"{f['start_p50_ms']:.2f}" for f in figures) + " ms; enqueue/s "
                  + ", ".join(f"{f['enqueue_bulk_per_s']:.0f}" for f in figures))
    print(f"pgbench: {ceiling:.0f} commits/s (8 clients, one-row UPDATE per transaction)")
    targets = target_lines(results)
    for line in targets["printed"]:
        print(line)
    write_json(args.json, "compare", {"systems": results, "runs": runs, "targets": targets["figures"],
                                      "pgbench_commits_per_s": ceiling, "versions": versions()}, args)


def target_lines(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """docjobs' targets against PgQueuer in the same run, each figure beside its target (printed when missed,
    never a failed command)."""
    if "docjobs" not in results or "pgqueuer" not in results:
        return {"printed": [], "figures": {}}
    ours, theirs = results["docjobs"], results["pgqueuer"]
    # (figure, ratio, at least (True) or at most, bound)
    checks = [("throughput_vs_pgqueuer", ours["jobs_per_s"] / theirs["jobs_per_s"], True, 1.0),
              ("start_p50_vs_pgqueuer", ours["start_p50_ms"] / theirs["start_p50_ms"], False, 1.0),
              ("bulk_enqueue_vs_pgqueuer", ours["enqueue_bulk_per_s"] / theirs["enqueue_bulk_per_s"], True, 0.5)]
    figures = {key: {"ratio": ratio, "target": f"{'>=' if at_least else '<='} {bound}",
                     "met": ratio >= bound if at_least else ratio <= bound}
               for key, ratio, at_least, bound in checks}
    names = {"throughput_vs_pgqueuer": "throughput, docjobs / PgQueuer",
             "start_p50_vs_pgqueuer": "enqueue-to-start p50, docjobs / PgQueuer",
             "bulk_enqueue_vs_pgqueuer": "bulk enqueue, docjobs / PgQueuer"}
    printed = ["targets:"] + [
        f"  {names[key]:42s} {figure['ratio']:5.2f}  (target {figure['target']}: "
        f"{'met' if figure['met'] else 'NOT MET'})" for key, figure in figures.items()]
    printed.append(f"  docjobs' CPU per job {ours['cpu_ms_per_job']:.3f} ms against PgQueuer's "
                   f"{theirs['cpu_ms_per_job']:.3f} ms: on a machine whose cores are all busy, throughput is "
                   "at most their inverse ratio")
    return {"printed": printed, "figures": figures}


if __name__ == "__main__":
    main()
