"""The render sandbox on its own: a real zygote, its standing spec workers, their limits and their ends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import psutil
import pytest

from renderer.sandbox.client import RenderError, Sandbox
from renderer.sandbox.zygote import SPEC_PROGRESS_AFTER_S, SPEC_PROGRESS_EVERY_S

from .conftest import wait_until
from .renderers import example

SPEC_LIMITS = {"timeout_s": 60.0, "cpu_s": 30, "memory_mb": 1024, "file_mb": 100, "processes": 16}
TIGHT_CPU = {**SPEC_LIMITS, "cpu_s": 2}
CODE_LIMITS = {"timeout_s": 10.0, "cpu_s": 5, "memory_mb": 512, "file_mb": 20, "processes": 8}


def rows_spec(rows: int) -> dict[str, Any]:
    columns = [{"header": "Region"}, {"header": "Units", "format": "integer"},
               {"header": "Price", "format": "currency"}, {"header": "Amount", "format": "currency"}]
    return {"sheets": [{"name": "Data", "columns": columns, "rows": [
        [["North", "South", "East", "West"][r % 4], r % 97, 9.99 + r % 13, {"formula": f"B{r + 2}*C{r + 2}"}]
        for r in range(rows)]}]}


@pytest.fixture
async def sandbox(tmp_path: Path):
    box = Sandbox(tmp_path / "sandbox", CODE_LIMITS, SPEC_LIMITS, spec_workers=2)
    await box.start()
    yield box
    await box.stop()


def workers(box: Sandbox) -> set[int]:
    assert box.pid is not None
    return {child.pid for child in psutil.Process(box.pid).children()}


async def render(box: Sandbox, spec: dict[str, Any], render_id: str | None = None) -> Path:
    result = await box.render(render_id or box.new_render_id(), "spreadsheet", "spec", spec, "t", lambda _p, _m: None)
    return result.path


async def test_spec_jobs_are_served_by_standing_workers_not_a_fork_each(sandbox: Sandbox) -> None:
    standing = workers(sandbox)
    assert len(standing) == 2  # started ahead, before the first job
    spec = example("spreadsheet")["spec"]
    for _ in range(6):
        path = await render(sandbox, spec)
        assert openpyxl.load_workbook(path)["Summary"]["A2"].value == "North"
    assert workers(sandbox) == standing


async def test_a_spec_render_reports_progress_only_once_it_has_run_a_while_and_then_paced(sandbox: Sandbox) -> None:
    # Each report wakes the zygote and the renderer while the render runs; the renderer sends none in a
    # job's first 0.25 s nor more than five a second, so the worker says nothing it would not use.
    reports: list[float] = []
    started = loop_time()
    await sandbox.render(sandbox.new_render_id(), "spreadsheet", "spec", example("spreadsheet")["spec"], "t",
                         lambda _p, _m: reports.append(loop_time()))
    # A small document is done in a few milliseconds: nothing (and never anything before its time).
    assert all(at - started >= SPEC_PROGRESS_AFTER_S for at in reports), [at - started for at in reports]

    reports.clear()
    started = loop_time()
    await sandbox.render(sandbox.new_render_id(), "spreadsheet", "spec", rows_spec(20_000), "t",
                         lambda _p, _m: reports.append(loop_time()))
    elapsed = loop_time() - started
    assert reports, "a render of seconds reports its progress"
    assert reports[0] - started >= SPEC_PROGRESS_AFTER_S
    assert len(reports) <= elapsed / SPEC_PROGRESS_EVERY_S, (len(reports), elapsed)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# In a process of its own: the pacing's timer is a SIGALRM, which this test process leaves to pytest-timeout.
PACED = """
import json, os, time
from renderer.sandbox.zygote import _PacedProgress
r, w = os.pipe()
os.set_blocking(r, False)

def sent():
    try:
        return [json.loads(line) for line in os.read(r, 1 << 16).splitlines()]
    except BlockingIOError:
        return []

out = {}
started = time.monotonic()  # before the callback is made: its 0.2 s count from then at the soonest
progress = _PacedProgress(w)
progress(40, "row 1 of 2")
progress(95, "saving")
out["early"], out["early_s"] = sent(), time.monotonic() - started
time.sleep(0.6)  # a stage that says nothing more (a long save)
out["late"] = sent()
progress.close()
started = time.monotonic()
progress = _PacedProgress(w)
while time.monotonic() - started < 0.7:
    progress(50, "row")
    time.sleep(0.01)
progress.close()
out["steady_s"] = time.monotonic() - started
out["steady"] = len(sent())
time.sleep(0.3)
out["after_close"] = sent()
print(json.dumps(out))
"""


def test_a_progress_report_held_back_goes_out_when_its_time_comes_though_the_render_says_nothing_more() -> None:
    done = subprocess.run([sys.executable, "-c", PACED], capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(done.stdout)
    if out["early_s"] < SPEC_PROGRESS_AFTER_S:
        assert out["early"] == []  # nothing in the first 0.2 s
    assert out["late"] == [{"progress": 95, "message": "saving"}]  # the latest, though none came after it
    # Reports every 10 ms: the first at 0.2 s at the soonest, then at most one per 0.2 s; none after close().
    most = 1 + int((out["steady_s"] - SPEC_PROGRESS_AFTER_S) / SPEC_PROGRESS_EVERY_S)
    assert 1 <= out["steady"] <= most, out
    assert out["after_close"] == []


async def test_a_refused_spec_keeps_its_worker_and_a_cancelled_one_is_replaced(sandbox: Sandbox) -> None:
    standing = workers(sandbox)
    with pytest.raises(RenderError) as refused:
        await render(sandbox, {"sheets": [{"name": "x", "rows": "not rows"}]})
    assert refused.value.code == "invalid_spec" and not refused.value.given_back
    assert workers(sandbox) == standing  # a validation error is an answer, not a reason to replace the worker

    render_id = sandbox.new_render_id()
    started = asyncio.Event()
    big = asyncio.create_task(sandbox.render(render_id, "spreadsheet", "spec", rows_spec(30_000), "t",
                                             lambda _p, _m: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    await sandbox.cancel(render_id)
    with pytest.raises(RenderError) as cancelled:
        await big
    assert cancelled.value.cancelled
    # The cancelled job's worker is killed, never reused; a fresh one takes its place.
    await wait_until(lambda: len(workers(sandbox)) == 2 and workers(sandbox) != standing, timeout=10)
    assert len(workers(sandbox) & standing) == 1
    path = await render(sandbox, example("spreadsheet")["spec"])
    assert openpyxl.load_workbook(path)["Summary"]["A2"].value == "North"


async def test_each_spec_job_gets_the_whole_cpu_limit_however_long_its_worker_has_served(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "sandbox", CODE_LIMITS, TIGHT_CPU, spec_workers=1)
    await box.start()
    try:
        (worker,) = workers(box)
        process = psutil.Process(worker)
        spent = 0.0
        jobs = 0
        # Jobs well under the 2 s limit each (even on a busy machine, where a job's CPU time grows),
        # until the worker has spent twice the limit in all (a worker serves up to 100 jobs).
        while spent < 2 * TIGHT_CPU["cpu_s"]:
            path = await render(box, rows_spec(3_000))
            book = openpyxl.load_workbook(path, read_only=True)
            try:
                assert book["Data"].max_row == 3_001
            finally:
                book.close()  # a read-only workbook holds its file open until closed
            times = process.cpu_times()
            spent = times.user + times.system
            jobs += 1
            assert jobs < 90, "the jobs are too small to add up to the limit"
        assert workers(box) == {worker}
        # One job over the limit on its own is stopped, and says why.
        with pytest.raises(RenderError, match="CPU time limit of 2 s"):
            await render(box, rows_spec(300_000))
    finally:
        await box.stop()


def private_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_full_info().uss) / 2**20


async def test_a_spec_worker_warms_up_before_its_first_job_and_its_successor_before_it_is_needed(
        tmp_path: Path) -> None:
    """A forked worker shares the zygote's pages until it writes to them, and a render writes to many: a
    fresh worker's first job paid for copying them (a small pdf took 23-47 ms end to end instead of 12).
    So a worker renders the sample documents while it waits for its first job, and the worker that
    replaces one at its SPEC_WORKER_JOBS-th job is started SUCCESSOR_LEAD_JOBS jobs before, warm when
    its first job comes."""
    from renderer.sandbox.zygote import SPEC_WORKER_JOBS, SUCCESSOR_LEAD_JOBS

    box = Sandbox(tmp_path / "sandbox", CODE_LIMITS, SPEC_LIMITS, spec_workers=1)
    await box.start()
    try:
        (first,) = workers(box)
        # Its own copies of what a render touches (a few MiB before, all shared with the zygote).
        await wait_until(lambda: private_mb(first) > 15, timeout=30)
        spec = {"blocks": [{"type": "paragraph", "text": "small"}]}

        async def small_pdf() -> None:
            result = await box.render(box.new_render_id(), "pdf", "spec", spec, "t", lambda _p, _m: None)
            assert result.path.read_bytes().startswith(b"%PDF")

        for _ in range(SPEC_WORKER_JOBS - SUCCESSOR_LEAD_JOBS):
            await small_pdf()
        assert workers(box) == {first}
        await small_pdf()  # the first of its last jobs: its successor starts beside it
        (successor,) = workers(box) - {first}
        await wait_until(lambda: private_mb(successor) > 15, timeout=30)  # warm, and no job of its own yet
        for _ in range(SUCCESSOR_LEAD_JOBS):
            await small_pdf()
        await small_pdf()  # the successor's first
        await wait_until(lambda: workers(box) == {successor}, timeout=10)  # the first retired; nothing else forked
    finally:
        await box.stop()
