"""The `docjobs` command against a running gateway and renderer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pypdf
import pytest

from .gateway_client import start_gateway, token
from .renderers import EXAMPLES, RendererProcess


@pytest.fixture
async def stack(jobstore, tmp_path):
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    gateway = await start_gateway(jobstore.address)
    yield gateway
    await gateway.stop()
    await renderer.shutdown()


def docjobs(*args: str, url: str, user: str = "cli-user") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "docjobs.cli", "--url", url, "--token", token(user), *args],
                          capture_output=True, text=True, timeout=120)


async def test_submit_wait_and_download(stack, tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    result = await asyncio.to_thread(docjobs, "submit", str(EXAMPLES / "pdf.json"), "--wait", "--out", str(out),
                                     url=stack.base)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert "100%" in result.stderr and f"saved {out}" in result.stderr
    assert "Invoice INV-2026-0117" in pypdf.PdfReader(str(out)).pages[0].extract_text()
    watched = await asyncio.to_thread(docjobs, "watch", job_id, url=stack.base)
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[0]["event"] == "status" and events[-1]["event"] == "job-complete"
    stats = json.loads((await asyncio.to_thread(docjobs, "stats", url=stack.base)).stdout)
    assert stats["counts"]["pdf"]["completed"] >= 1


async def test_errors_are_one_line(stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"documentType": "pdf", "spec": {"blocks": []}}))
    result = await asyncio.to_thread(docjobs, "submit", str(bad), url=stack.base)
    assert result.returncode == 1
    assert result.stderr.strip() == "docjobs: 422 (spec.blocks): spec.blocks: [] should be non-empty"
    unreachable = await asyncio.to_thread(docjobs, "stats", url="http://127.0.0.1:1")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


async def test_health_checks_what_container_health_checks_run(stack, jobstore) -> None:
    def health(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "docjobs.cli", "health", *args, "--timeout", "2"],
                              capture_output=True, text=True, timeout=60)

    assert (await asyncio.to_thread(health, "grpc", jobstore.address)).returncode == 0
    assert (await asyncio.to_thread(health, "http", f"{stack.base}/readyz")).returncode == 0
    down = await asyncio.to_thread(health, "grpc", "127.0.0.1:1")
    assert down.returncode == 1 and "NOT healthy" in down.stderr
    assert (await asyncio.to_thread(health, "http", "http://127.0.0.1:1/healthz")).returncode == 1
