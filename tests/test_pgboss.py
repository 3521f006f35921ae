"""The pg-boss bridge against real pg-boss: pg-boss 12 on Node 22 (tests/pgboss, installed by `make setup`)
sends, cancels and reads jobs in the test's Postgres, as a Node service would; a real jobstore process
runs the bridge, a real renderer process renders, and the download link goes through a gateway."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest

from docjobs.channels import jobstore_channel
from docjobs.pgserver import EmbeddedPostgres, free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from .conftest import GRPC_TOKEN, create_database, new_user, wait_until
from .gateway_client import SECRET, RunningGateway, start_gateway, token
from .helpers import claim
from .processes import JobStoreProcess, StackProcess
from .renderers import RendererProcess

ROOT = Path(__file__).resolve().parent.parent
PGBOSS = ROOT / "tests" / "pgboss"
NODE = PGBOSS / "node_modules" / ".bin" / "node"
QUEUE = "docjobs"
PDF = json.loads((ROOT / "examples" / "pdf.json").read_text())["spec"]


def boss_command(database_url: str, command: str, schema: str = "pgboss", **args: Any) -> Any:
    """One pg-boss call from Node (tests/pgboss/boss.mjs); its JSON answer."""
    if not NODE.exists():
        pytest.fail("Node 22 and pg-boss are missing: `make setup` installs them (npm ci --prefix tests/pgboss)")
    env = {**os.environ, "DATABASE_URL": database_url, "PGBOSS_SCHEMA": schema}
    result = subprocess.run([str(NODE), str(PGBOSS / "boss.mjs"), command, json.dumps({"queue": QUEUE, **args})],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def boss(database_url: str, command: str, **args: Any) -> Any:
    return await asyncio.to_thread(boss_command, database_url, command, **args)


class Stack:
    """pg-boss installed, a jobstore process running the bridge, a gateway in front of it, and a renderer
    when asked for (without one, a job stays pending: the time to cancel it)."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        # Bound now, served on later: a port only chosen here could be taken (by a connection's ephemeral
        # port) while the jobstore starts with the gateway's URL.
        self.gateway_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.gateway_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.gateway_socket.bind(("127.0.0.1", 0))
        self.gateway_port = self.gateway_socket.getsockname()[1]
        self.metrics_port = free_port()
        self.jobstore: JobStoreProcess | None = None
        self.renderer: RendererProcess | None = None
        self.gateway: RunningGateway | None = None
        self.channel: Any = None
        self.stub: pb_grpc.JobStoreAsyncStub

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start_jobstore(self, port: int | None = None) -> None:
        self.jobstore = JobStoreProcess(self.database_url, port=port, log_path=self.data_dir / "jobstore.log", env={
            "DOCJOBS_PGBOSS_QUEUE": QUEUE, "DOCJOBS_PGBOSS_INTERVAL_S": "0.1", "DOCJOBS_PUBLIC_URL": self.base,
            "DOCJOBS_JWT_SECRET": SECRET, "DOCJOBS_METRICS_PORT": str(self.metrics_port)}).start()
        self.jobstore.wait_healthy()
        if self.channel is None:
            self.channel = jobstore_channel(self.jobstore.address, GRPC_TOKEN)
            self.stub = pb_grpc.JobStoreStub(self.channel)

    def start_renderer(self) -> None:
        assert self.jobstore is not None
        self.renderer = RendererProcess(self.jobstore.address, self.data_dir).start()

    async def jobs(self, user: str) -> list[pb.Job]:
        return list((await self.stub.ListJobs(pb.ListJobsRequest(user_id=user))).jobs)

    async def stop(self) -> None:
        if self.renderer is not None:
            await self.renderer.shutdown()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.channel is not None:
            await self.channel.close()
        if self.jobstore is not None:
            self.jobstore.kill()
        self.gateway_socket.close()  # served and closed by the gateway, or never served


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    assert await boss(database_url, "setup") == 46  # the schema version the bridge is tested with
    running = Stack(database_url, tmp_path)
    try:
        running.start_jobstore()
        assert running.jobstore is not None
        running.gateway = await start_gateway(running.jobstore.address, sock=running.gateway_socket)
        yield running
    finally:  # what was started, also when a later step failed
        await running.stop()


async def pgboss_job(stack: Stack | str, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    """The pg-boss job once it is in one of `states` (`stack`: a Stack, or pg-boss's database URL)."""
    database_url = stack if isinstance(stack, str) else stack.database_url

    async def reached() -> dict[str, Any] | None:
        job = await boss(database_url, "get", id=job_id)
        return job if job is not None and job["state"] in states else None

    found: dict[str, Any] = await wait_until(reached, timeout=timeout, interval=0.2)
    return found


async def docjobs_job(stack: Stack, user: str, *statuses: int, timeout: float = 30) -> pb.Job:
    async def reached() -> pb.Job | None:
        jobs = await stack.jobs(user)
        return jobs[0] if jobs and jobs[0].status in statuses else None

    found: pb.Job = await wait_until(reached, timeout=timeout, interval=0.05)
    return found


async def test_a_sent_job_completes_with_its_document_downloadable_from_the_output(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    stack.start_renderer()
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={
        "documentType": "pdf", "title": "Invoice", "spec": PDF, "userId": user, "sessionId": "chat-1",
        "messageId": "m-1", "priority": 7}, options={"priority": 3})
    done = await pgboss_job(stack, job_id, "completed", "failed")
    assert done["state"] == "completed", done
    output = done["output"]
    assert set(output) == {"jobId", "status", "artifactId", "downloadUrl", "sizeBytes", "sha256"}
    assert output["status"] == "completed"
    [job] = await stack.jobs(user)  # one docjobs job, the payload's priority over pg-boss's own
    assert (job.id, job.status, job.priority, job.title, job.session_id, job.message_id) == (
        output["jobId"], pb.JOB_STATUS_COMPLETED, 7, "Invoice", "chat-1", "m-1")
    assert job.artifact_id == output["artifactId"]
    assert output["downloadUrl"].startswith(f"{stack.base}/api/jobs/{job.id}/artifact?token=")
    async with http.get(output["downloadUrl"]) as response:  # the link alone: no header
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "application/pdf"
        content = await response.read()
    assert content.startswith(b"%PDF")
    assert (len(content), hashlib.sha256(content).hexdigest()) == (output["sizeBytes"], output["sha256"])
    async with http.get(f"http://127.0.0.1:{stack.metrics_port}/metrics") as response:
        scraped = await response.text()
    assert 'docjobs_jobstore_pgboss_jobs_total{outcome="claimed"} 1.0' in scraped
    assert 'docjobs_jobstore_pgboss_jobs_total{outcome="completed"} 1.0' in scraped


async def test_an_invalid_spec_fails_the_pgboss_job_with_the_http_apis_error(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    user = new_user()
    body = {"documentType": "spreadsheet", "title": "Bad", "spec": {"sheets": [{"name": 7}]}, "userId": user}
    job_id = await boss(stack.database_url, "send", data=body)
    failed = await pgboss_job(stack, job_id, "failed", "completed")
    assert failed["state"] == "failed"
    async with http.post(f"{stack.base}/api/jobs", json=body,
                         headers={"Authorization": f"Bearer {token('backend', scope='docjobs:service')}"}) as response:
        assert response.status == 422
        expected = (await response.json())["error"]
    assert failed["output"] == {"error": expected}
    assert failed["retryCount"] == 0  # failed once, for good: a retry would refuse it again
    assert await stack.jobs(user) == []


async def test_boss_cancel_cancels_the_docjobs_job(stack: Stack) -> None:
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    job = await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)  # no renderer: it waits
    await pgboss_job(stack, job_id, "active")
    await boss(stack.database_url, "cancel", id=job_id)
    cancelled = await docjobs_job(stack, user, pb.JOB_STATUS_CANCELLED)
    assert cancelled.id == job.id
    assert cancelled.error.message == "cancelled through pg-boss"
    assert (await boss(stack.database_url, "get", id=job_id))["state"] == "cancelled"


async def test_a_docjobs_cancel_fails_the_pgboss_job_with_code_cancelled(stack: Stack) -> None:
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    job = await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)
    await stack.stub.Cancel(pb.CancelRequest(job_id=job.id, user_id=user, reason="the user changed their mind"))
    failed = await pgboss_job(stack, job_id, "failed", "completed")
    assert failed["state"] == "failed"
    assert failed["output"] == {"jobId": job.id, "status": "cancelled",
                                "error": {"code": "cancelled", "message": "the user changed their mind"}}


async def test_a_bridge_killed_mid_job_completes_the_job_once_after_it_restarts(stack: Stack) -> None:
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    job = await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)
    assert (await pgboss_job(stack, job_id, "active"))["retryCount"] == 0
    assert stack.jobstore is not None and stack.jobstore.process is not None
    os.killpg(stack.jobstore.process.pid, signal.SIGKILL)
    stack.jobstore.process.wait()
    # Again on the same database and port; the pg-boss job is still active under the first claim.
    stack.start_jobstore(port=stack.jobstore.port)
    stack.start_renderer()
    done = await pgboss_job(stack, job_id, "completed", "failed")
    assert done["state"] == "completed"
    assert (done["output"]["jobId"], done["retryCount"]) == (job.id, 0)  # one claim, the first one
    [only] = await stack.jobs(user)
    assert (only.id, only.status) == (job.id, pb.JOB_STATUS_COMPLETED)
    conn = await asyncpg.connect(stack.database_url)
    try:
        links = await conn.fetch("SELECT job_id, settled_at FROM pgboss_links")
    finally:
        await conn.close()
    assert [(str(r["job_id"]), r["settled_at"] is not None) for r in links] == [(job.id, True)]


async def test_a_claim_that_cannot_commit_after_its_document_was_made_makes_no_second_one(stack: Stack) -> None:
    """The window between the two databases' commits: the docjobs job and its link are committed, then the
    pg-boss claim fails (as it would with the jobstore killed there). The job stays unclaimed in pg-boss
    and renders all the same; once a claim commits, it ends with that one document."""
    conn = await asyncpg.connect(stack.database_url)
    try:  # a real failure of the claim's update, in Postgres, until the trigger goes
        await conn.execute("""
            CREATE FUNCTION pgboss.refuse_claims() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.state = 'active' THEN RAISE EXCEPTION 'the claim cannot commit'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_claims BEFORE UPDATE ON pgboss.job
                FOR EACH ROW EXECUTE FUNCTION pgboss.refuse_claims()""")
        stack.start_renderer()
        user = new_user()
        job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
        job = await docjobs_job(stack, user, pb.JOB_STATUS_COMPLETED, timeout=60)
        assert (await boss(stack.database_url, "get", id=job_id))["state"] == "created"
        await conn.execute("DROP TRIGGER refuse_claims ON pgboss.job")
    finally:
        await conn.close()
    done = await pgboss_job(stack, job_id, "completed", "failed")
    assert (done["state"], done["retryCount"], done["output"]["jobId"]) == ("completed", 0, job.id)
    assert [j.id for j in await stack.jobs(user)] == [job.id]


async def test_a_job_pgboss_gives_back_is_taken_over_again_never_a_second_document(stack: Stack) -> None:
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    job = await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)
    await pgboss_job(stack, job_id, "active")
    # What pg-boss's supervisor does to a claim whose expireInSeconds or heartbeat ran out: the job goes
    # back to `retry`, and the bridge's next fetch claims it again (a second attempt).
    await boss(stack.database_url, "fail", id=job_id)
    again = await pgboss_job(stack, job_id, "active")
    assert again["retryCount"] == 1
    stack.start_renderer()
    done = await pgboss_job(stack, job_id, "completed", "failed")
    assert (done["state"], done["retryCount"], done["output"]["jobId"]) == ("completed", 1, job.id)
    [only] = await stack.jobs(user)
    assert (only.id, only.status) == (job.id, pb.JOB_STATUS_COMPLETED)


async def test_an_untested_pgboss_schema_version_is_refused_in_one_line(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:  # what an older pg-boss left: its schema at another version
        await conn.execute("CREATE SCHEMA oldboss; CREATE TABLE oldboss.version (version int PRIMARY KEY);"
                           "INSERT INTO oldboss.version VALUES (45)")
    finally:
        await conn.close()
    store = JobStoreProcess(database_url, env={"DOCJOBS_PGBOSS_QUEUE": QUEUE, "DOCJOBS_PGBOSS_SCHEMA": "oldboss",
                                               "DOCJOBS_JWT_SECRET": SECRET}).start()
    assert store.process is not None
    output = (await asyncio.to_thread(store.process.communicate, None, 30))[0].decode()
    status = store.process.returncode
    lines = [line for line in output.splitlines() if line.startswith("jobstore:")]
    assert status == 78, output  # EXIT_DO_NOT_RESTART: `docjobs up` stops instead of restarting it
    assert len(lines) == 1 and "version 45" in lines[0] and "46" in lines[0], output
    assert "Traceback" not in output


async def test_make_run_bridges_a_pgboss_queue_with_links_to_its_own_gateway(
        database_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """`docjobs up` (no auth, the local demo) with DOCJOBS_PGBOSS_QUEUE set: its jobstore signs links as its
    gateway does, absolute to the gateway's address."""
    assert await boss(database_url, "setup") == 46
    local = StackProcess(tmp_path / "stack.log", database_url=database_url, DOCJOBS_PGBOSS_QUEUE=QUEUE,
                         DOCJOBS_PGBOSS_INTERVAL_S="0.1").start()
    try:
        await asyncio.to_thread(local.wait_up)
        job_id = await boss(database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": "local"})
        done = await pgboss_job(database_url, job_id, "completed", "failed")
        assert done["state"] == "completed", done
        assert done["output"]["downloadUrl"].startswith(f"{local.base}/api/jobs/{done['output']['jobId']}/artifact?")
        async with http.get(done["output"]["downloadUrl"]) as response:
            assert response.status == 200, await response.text()
            assert (await response.read()).startswith(b"%PDF")
    finally:
        await asyncio.to_thread(local.stop)
        local.kill_tree()


async def test_pgboss_in_a_database_of_its_own(pg: EmbeddedPostgres, database_url: str, tmp_path: Path) -> None:
    boss_url = await create_database(pg, None)  # DOCJOBS_PGBOSS_DATABASE_URL: not docjobs' database
    assert await boss(boss_url, "setup") == 46
    store = JobStoreProcess(database_url, log_path=tmp_path / "jobstore.log", env={
        "DOCJOBS_PGBOSS_QUEUE": QUEUE, "DOCJOBS_PGBOSS_DATABASE_URL": boss_url, "DOCJOBS_PGBOSS_INTERVAL_S": "0.1",
        "DOCJOBS_JWT_SECRET": SECRET}).start()
    renderer = None
    try:
        store.wait_healthy()
        renderer = RendererProcess(store.address, tmp_path).start()
        user = new_user()
        job_id = await boss(boss_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
        done = await pgboss_job(boss_url, job_id, "completed", "failed")
        assert done["state"] == "completed", done
        assert done["output"]["downloadUrl"].startswith(f"/api/jobs/{done['output']['jobId']}/artifact?token=")
    finally:
        if renderer is not None:
            await renderer.shutdown()
        store.kill()


async def test_two_jobstores_bridge_one_queue_and_each_pgboss_job_is_one_document(
        database_url: str, tmp_path: Path) -> None:
    """Every replica runs the bridge: their claims skip each other's locked rows, and each pg-boss job
    becomes one docjobs job, ended once."""
    assert await boss(database_url, "setup") == 46
    env = {"DOCJOBS_PGBOSS_QUEUE": QUEUE, "DOCJOBS_PGBOSS_INTERVAL_S": "0.05", "DOCJOBS_PGBOSS_BATCH": "1",
           "DOCJOBS_JWT_SECRET": SECRET}
    stores = [JobStoreProcess(database_url, log_path=tmp_path / f"jobstore-{n}.log", env=env).start()
              for n in range(2)]
    renderer = None
    try:
        for store in stores:
            store.wait_healthy()
        users = [new_user() for _ in range(12)]
        # All at once, while both bridges poll: they take them one a round each, racing for the same rows.
        ids = await boss(database_url, "insert", data=[{"documentType": "pdf", "spec": PDF, "userId": user}
                                                       for user in users])
        renderer = RendererProcess(stores[0].address, tmp_path).start()
        done = [await pgboss_job(database_url, job_id, "completed", "failed") for job_id in ids]
        assert [(d["state"], d["retryCount"]) for d in done] == [("completed", 0)] * len(ids)
        conn = await asyncpg.connect(database_url)
        try:
            jobs = await conn.fetch("SELECT id, user_id, status FROM document_jobs")
            links = await conn.fetchval("SELECT count(*) FROM pgboss_links WHERE settled_at IS NOT NULL")
        finally:
            await conn.close()
        assert sorted((r["user_id"], r["status"]) for r in jobs) == sorted((u, "completed") for u in users)
        assert sorted(str(r["id"]) for r in jobs) == sorted(d["output"]["jobId"] for d in done)
        assert links == len(ids)
    finally:
        if renderer is not None:
            await renderer.shutdown()
        for store in stores:
            store.kill()


async def test_a_payload_nested_too_deep_is_refused_alone_and_the_queue_goes_on(stack: Stack) -> None:
    """A payload deeper than Python's JSON reader goes (pg-boss and Postgres take it) fails its own pg-boss
    job as the HTTP API refuses such a body; it must not stop every later job from being taken."""
    user = new_user()
    deep = "[" * 2000 + "]" * 2000  # built by hand: Python's json cannot write it either
    raw = f'{{"queue": "{QUEUE}", "data": {{"documentType": "pdf", "userId": "{user}", "spec": {deep}}}}}'
    env = {**os.environ, "DATABASE_URL": stack.database_url, "PGBOSS_SCHEMA": "pgboss"}
    sent = await asyncio.to_thread(subprocess.run, [str(NODE), str(PGBOSS / "boss.mjs"), "send", raw], env=env,
                                   capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    hostile = json.loads(sent.stdout)
    after = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    await pgboss_job(stack, after, "active")  # the job sent after it is taken
    conn = await asyncpg.connect(stack.database_url)
    try:
        row = await conn.fetchrow("SELECT state::text, output::text FROM pgboss.job WHERE id = $1", hostile)
    finally:
        await conn.close()
    assert row is not None and row["state"] == "failed"
    error = json.loads(row["output"])["error"]
    assert error["code"] == "malformed" and error["field"] == "body" and "nested" in error["message"]


async def test_a_number_python_will_not_read_is_refused_alone_and_the_queue_goes_on(stack: Stack) -> None:
    """jsonb stores a number of 5,000 digits; Python refuses to read more than 4,300. Raised, it failed
    every round at its claim: no later job was taken, and the jobs already taken were neither beaten nor
    settled. It fails its own pg-boss job as malformed, and the jobs after it are made and completed."""
    stack.start_renderer()
    user = new_user()
    # Held back (startAfter) until its data is made what no pg-boss client can send, then due at once.
    hostile = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user,
                                                           "n": 1}, options={"startAfter": 3600})
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("UPDATE pgboss.job SET data = jsonb_set(data, '{n}', ('1' || repeat('0', 5000))::jsonb),"
                           " start_after = now() WHERE id = $1", uuid.UUID(hostile))
        after = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
        done = await pgboss_job(stack, after, "completed")
        assert done["output"]["status"] == "completed"
        row = await conn.fetchrow("SELECT state::text, output::text FROM pgboss.job WHERE id = $1", uuid.UUID(hostile))
    finally:
        await conn.close()
    assert row is not None and row["state"] == "failed"
    error = json.loads(row["output"])["error"]
    assert error["code"] == "malformed" and error["field"] == "body"


async def test_a_docjobs_job_retried_after_its_pgboss_job_failed_leaves_that_job_failed(stack: Stack) -> None:
    """A retry runs the docjobs job again; the pg-boss job it came from has ended (failed) and stays so,
    with its output: the Node service was told once."""
    user, other = new_user(), new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    job = await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)
    await stack.stub.Cancel(pb.CancelRequest(job_id=job.id, user_id=user, reason="not now"))
    failed = await pgboss_job(stack, job_id, "failed", "completed")
    assert failed["state"] == "failed"
    await stack.stub.Retry(pb.RetryRequest(job_id=job.id, user_id=user, reason="again"))
    claimed = await wait_until(lambda: claim(stack.stub, types=("pdf",)), timeout=10)
    await stack.stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed[0].lease_token,
                                                 result_json=json.dumps({"filename": "a.pdf"})))
    # A later pg-boss job taken and ended shows a round settled after the retried job completed.
    later = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": other})
    other_job = await docjobs_job(stack, other, pb.JOB_STATUS_PENDING)
    await stack.stub.Cancel(pb.CancelRequest(job_id=other_job.id, user_id=other, reason="not now"))
    await pgboss_job(stack, later, "failed")
    still = await boss(stack.database_url, "get", id=job_id)
    assert (still["state"], still["output"]) == ("failed", failed["output"])
    assert (await stack.stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_COMPLETED


async def test_boss_cancel_while_docjobs_renders_cancels_the_running_job(stack: Stack) -> None:
    """boss.cancel on a job docjobs is rendering cancels the running docjobs job: the worker's completion
    after it is refused, and the pg-boss job stays cancelled (not completed by the bridge)."""
    user = new_user()
    job_id = await boss(stack.database_url, "send", data={"documentType": "pdf", "spec": PDF, "userId": user})
    await docjobs_job(stack, user, pb.JOB_STATUS_PENDING)
    claimed = await wait_until(lambda: claim(stack.stub, types=("pdf",)), timeout=10)  # the test renders it
    await docjobs_job(stack, user, pb.JOB_STATUS_PROCESSING)
    await boss(stack.database_url, "cancel", id=job_id)
    cancelled = await docjobs_job(stack, user, pb.JOB_STATUS_CANCELLED)
    assert cancelled.error.message == "cancelled through pg-boss"
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.stub.Complete(pb.CompleteRequest(job_id=cancelled.id, lease_token=claimed[0].lease_token,
                                                     result_json=json.dumps({"filename": "a.pdf"})))
    assert (await boss(stack.database_url, "get", id=job_id))["state"] == "cancelled"
