"""Hostile HTTP input: a property-based run of schemathesis against the gateway's own OpenAPI document,
over a real gateway and jobstore (processes), finds no 5xx and no response that breaks the document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import create_database, wait_until
from .gateway_client import bearer
from .processes import GatewayProcess, JobStoreProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def gateway_schema(pg, template_db, tmp_path_factory) -> Iterator[schemathesis.BaseSchema]:  # type: ignore[no-untyped-def]
    database_url = asyncio.run(create_database(pg, template_db))
    logs: Path = tmp_path_factory.mktemp("hostile-http")
    jobstore = JobStoreProcess(database_url, log_path=logs / "jobstore.log").start()
    gateway = None
    try:
        jobstore.wait_healthy()
        gateway = GatewayProcess(jobstore.address, logs / "gateway.log").start()
        gateway.wait_ready()
        yield schemathesis.openapi.from_url(gateway.base + "/openapi.json")
    finally:
        if gateway is not None:
            gateway.stop()
        jobstore.terminate()
        if gateway is not None:
            assert "Traceback" not in (logs / "gateway.log").read_text()


def test_no_5xx_and_every_response_matches_the_openapi_document(gateway_schema) -> None:  # type: ignore[no-untyped-def]
    # Each operation of the document, driven by hypothesis through schemathesis' strategies (valid and
    # invalid data, derandomized so a failure reproduces). Its pytest plugin does not support this pytest.
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(headers=bearer("fuzzer"), checks=CHECKS, timeout=30)

        run()
    assert len(calls) == len(operations)  # every operation was exercised


async def _trickle(port: int, head: bytes, stop: asyncio.Event) -> bytes:
    """A slowloris client: sends `head`, then one more byte every 0.2 s until stopped or answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        while not stop.is_set():
            try:
                return await asyncio.wait_for(reader.read(4096), 0.2)  # an answer (or b"" when closed)
            except TimeoutError:
                writer.write(b"x")
                await writer.drain()
        return b""
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_slow_and_flooding_clients_do_not_starve_the_others(jobstore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .gateway_client import read_sse, start_gateway
    from .renderers import RendererProcess, example

    gateway = await start_gateway(jobstore.address, body_timeout_s=1.0, sse_streams_per_user=3)
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    port = int(gateway.base.rsplit(":", 1)[1])
    stop = asyncio.Event()
    auth = bearer("slow").popitem()
    attackers = (
        # headers that never end
        [asyncio.create_task(_trickle(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", stop)) for _ in range(150)]
        # a body that never ends
        + [asyncio.create_task(_trickle(port, (
            f"POST /api/jobs HTTP/1.1\r\nHost: x\r\n{auth[0]}: {auth[1]}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{").encode(), stop)) for _ in range(40)]
        # connections that say nothing at all
        + [asyncio.create_task(asyncio.open_connection("127.0.0.1", port)) for _ in range(150)]
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            # Meanwhile an ordinary user submits a document and follows it to the end.
            async with http.post(gateway.base + "/api/jobs", json=example("document"), headers=bearer("alice")) as r:
                assert r.status == 202
                created = await r.json()
            stream = await read_sse(http, gateway.base + created["eventsUrl"])
            assert stream.events[-1].name == "job-complete"
            async with http.get(gateway.base + "/healthz") as r:
                assert r.status == 200
            # The slow bodies were cut off with a clear 408 after DOCJOBS_BODY_TIMEOUT_S.
            slow_posts = attackers[150:190]
            answers = await asyncio.wait_for(asyncio.gather(*slow_posts), 30)
            assert all(a.startswith(b"HTTP/1.1 408") and b'"field": "body"' in a for a in answers), answers[:1]

            # Event streams per user are capped; other users are not affected by one user's streams.
            # No renderer from here on: the greedy user's jobs stay pending, so their streams stay open.
            await renderer.shutdown()
            urls = []
            for _ in range(4):
                async with http.post(gateway.base + "/api/jobs", json=example("document"),
                                     headers=bearer("greedy")) as r:
                    urls.append((await r.json())["eventsUrl"])
            opened = [await http.get(gateway.base + url) for url in urls[:3]]
            try:
                assert [o.status for o in opened] == [200, 200, 200]
                async with http.get(gateway.base + urls[3]) as r:
                    assert r.status == 429
                    assert (await r.json())["error"]["code"] == "too_many_streams"
                async with http.get(gateway.base + created["eventsUrl"]) as r:
                    assert r.status == 200  # alice's stream: a finished job answers its history at once
            finally:
                for o in opened:
                    o.close()
            # A closed stream frees its place.
            async def reopened() -> bool:
                async with http.get(gateway.base + urls[3]) as r:
                    return r.status == 200
            await wait_until(reopened, timeout=10, interval=0.1)
    finally:
        stop.set()
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        for task in attackers[190:]:
            if not task.cancelled() and task.exception() is None:
                task.result()[1].close()
        await gateway.stop()
        await renderer.shutdown()
