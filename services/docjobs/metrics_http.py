"""A small HTTP endpoint for processes that do not speak HTTP otherwise (the jobstore, the renderer):
`GET /metrics` in the Prometheus text format and `GET /healthz` (200 while the event loop answers).

It runs on the process's own event loop, so a scrape can refresh gauges with an async call first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


async def start_metrics_server(host: str, port: int, registry: CollectorRegistry,
                               before_scrape: Callable[[], Awaitable[None]] | None = None) -> web.AppRunner:
    async def metrics(_request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
