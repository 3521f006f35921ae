"""The demo page in a real browser (Debian's Chromium, driven by Playwright): pick a type, submit the
example, watch it live, see the preview, download; and a failing job shows its error. The page is built
on the browser client (/client/docjobs.js): the job is shown by its <docjobs-job> element, whose parts
Playwright's selectors reach inside its (open) shadow root."""

from __future__ import annotations

import shutil
from pathlib import Path

import openpyxl
import pytest
from playwright.async_api import async_playwright

from .gateway_client import start_gateway
from .renderers import RendererProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_PRESENT = Path(CHROMIUM).exists()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
STATUS = "docjobs-job [part=status]"
PREVIEW = "docjobs-job [part=preview]"
ERROR = "docjobs-job [part=error]"
DOWNLOAD = "docjobs-job [part=download]"
EXPECTED_PREVIEW = {
    "spreadsheet": "Sheet: Summary",
    "document": "Summary",
    "pdf": "1 page(s)",
    "presentation": "5 slide(s)",
}


@pytest.fixture
async def demo(jobstore, tmp_path):
    if not CHROMIUM_PRESENT:
        pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    gateway = await start_gateway(jobstore.address, auth="none", jwt_secret="")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(accept_downloads=True)
        await page.goto(gateway.base + "/")
        yield page
        await browser.close()
    await gateway.stop()
    await renderer.shutdown()


@pytest.mark.parametrize("job_type", list(EXPECTED_PREVIEW))
async def test_each_document_type_from_the_page(demo, job_type: str, tmp_path) -> None:
    page = demo
    await page.select_option("#type", job_type)
    await page.wait_for_function(f"document.getElementById('body').value.includes('\"{job_type}\"')")
    await page.click("#submit")
    await page.wait_for_selector(f"{DOWNLOAD}:not([hidden])", timeout=60_000)
    assert await page.text_content(STATUS) == "completed"
    assert EXPECTED_PREVIEW[job_type] in await page.inner_text(PREVIEW)
    log = await page.inner_text("#log")
    assert "status processing" in log and "complete" in log
    await page.screenshot(path=str(tmp_path / f"{job_type}.png"), full_page=True)
    async with page.expect_download() as info:
        await page.click(DOWNLOAD)
    download = await info.value
    target = tmp_path / download.suggested_filename
    await download.save_as(target)
    assert target.stat().st_size > 1000
    if job_type == "spreadsheet":
        assert openpyxl.load_workbook(target).sheetnames == ["Summary", "Orders"]


async def test_a_failing_job_shows_its_error(demo, tmp_path) -> None:
    page = demo
    await page.wait_for_function("document.getElementById('body').value.length > 0")
    await page.fill("#body", '{"documentType": "pdf", "title": "Code", "code": "x = 1"}')
    await page.click("#submit")
    await page.wait_for_selector(f"{ERROR}:not(:empty)", timeout=60_000)
    assert "code_execution_disabled" in await page.inner_text(ERROR)
    assert await page.text_content(STATUS) == "failed"
    await page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)


async def test_an_invalid_request_is_shown_without_submitting_a_job(demo) -> None:
    page = demo
    await page.fill("#body", '{"documentType": "pdf", "spec": {"blocks": '
                             '[{"type": "heading", "text": "x", "level": 9}]}}')
    await page.click("#submit")
    await page.wait_for_function("document.getElementById('request-error').textContent.length > 0")
    assert "spec.blocks[0].level" in await page.inner_text("#request-error")
    assert await page.is_hidden("#job")
