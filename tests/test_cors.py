"""CORS over real HTTP (DOCJOBS_CORS_ORIGINS): a preflight for every route and method the gateway has,
the headers on answers of every kind (JSON, errors, event streams, the client files), and nothing for
an origin that is not listed. Real browsers are in tests/test_browser_cross_origin.py."""

from __future__ import annotations

import re

import aiohttp
import pytest

from gateway.app import create_app
from gateway.settings import Settings

from .gateway_client import bearer, sse_events, start_gateway

APP = "http://app.example.test:5173"
OTHER = "http://evil.example.test"
ALLOWED_HEADERS = {"authorization", "content-type", "idempotency-key", "last-event-id"}


@pytest.fixture
async def gateway(jobstore):
    running = await start_gateway(jobstore.address, cors_origins=(APP,))
    yield running
    await running.stop()


def routes() -> list[tuple[str, str]]:
    """Every (path, method) the application routes, with a sample value in each path parameter."""
    found = []
    for route in create_app(Settings(auth="none")).router.routes():
        assert route.resource is not None
        path = re.sub(r"\{job_id\}", "6f1c1f55-2c5a-4a40-9a7d-0d5b3c1e0a11", route.resource.canonical)
        path = re.sub(r"\{job_type\}", "pdf", path)
        path = re.sub(r"\{name\}", "docjobs.js", path)
        path = re.sub(r"\{kind\}", "thumbnail", path)
        found.append((path, route.method))
    assert ("/api/jobs", "POST") in found and ("/api/jobs/6f1c1f55-2c5a-4a40-9a7d-0d5b3c1e0a11", "DELETE") in found
    return found


def header_set(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


async def test_every_route_and_method_is_preflighted_for_a_listed_origin(http, gateway) -> None:
    for path, method in routes():
        # A GET with Authorization is preflighted too, and EventSource resumes with Last-Event-ID.
        async with http.options(gateway.base + path, headers={
                "Origin": APP, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization,content-type,idempotency-key,last-event-id"}) as r:
            assert r.status == 204, (path, method, r.status, await r.text())
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert method.lower() in header_set(r.headers["Access-Control-Allow-Methods"])
            assert header_set(r.headers["Access-Control-Allow-Headers"]) == ALLOWED_HEADERS
            assert int(r.headers["Access-Control-Max-Age"]) > 0
            assert "origin" in header_set(r.headers["Vary"])


async def test_a_preflight_from_an_unlisted_origin_is_refused_in_json(http, gateway) -> None:
    async with http.options(gateway.base + "/api/jobs", headers={
            "Origin": OTHER, "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 403
        assert (await r.json())["error"] == {
            "code": "cors_origin_not_allowed", "field": "Origin",
            "message": f"the origin {OTHER!r} is not in DOCJOBS_CORS_ORIGINS: cross-origin requests from it "
                       "are refused"}
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_a_preflight_for_a_method_or_path_the_gateway_does_not_have(http, gateway) -> None:
    async with http.options(gateway.base + "/api/jobs", headers={
            "Origin": APP, "Access-Control-Request-Method": "PUT"}) as r:
        assert r.status == 405
        assert (await r.json())["error"]["field"] == "Access-Control-Request-Method"
        assert "Access-Control-Allow-Methods" not in r.headers
    async with http.options(gateway.base + "/api/nothing", headers={
            "Origin": APP, "Access-Control-Request-Method": "GET"}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


def assert_cors(response: aiohttp.ClientResponse, origin: str | None = APP) -> None:
    assert "origin" in header_set(response.headers.get("Vary"))
    if origin is None:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        return
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert header_set(response.headers["Access-Control-Expose-Headers"]) == {
        "content-disposition", "etag", "location"}
    assert "Access-Control-Allow-Credentials" not in response.headers  # bearer tokens, no cookies


async def test_answers_of_every_kind_carry_the_headers_for_a_listed_origin_only(http, gateway) -> None:
    body = {"documentType": "pdf", "title": "CORS", "spec": {"blocks": [{"type": "paragraph", "text": "x"}]}}
    async with http.post(gateway.base + "/api/jobs", json=body, headers={**bearer("cors-user"), "Origin": APP}) as r:
        assert r.status == 202
        assert_cors(r)
        created = await r.json()
    # Errors, from a handler, from the errors middleware and from aiohttp's router, are readable too.
    async with http.post(gateway.base + "/api/jobs", json={**body, "documentType": "x"},
                         headers={**bearer("cors-user"), "Origin": APP}) as r:
        assert r.status == 422
        assert_cors(r)
    async with http.get(gateway.base + "/api/jobs", headers={"Origin": APP}) as r:
        assert r.status == 401
        assert_cors(r)
    async with http.get(gateway.base + "/api/nothing", headers={"Origin": APP}) as r:
        assert r.status == 404
        assert_cors(r)
    # The event stream: its headers are sent when it starts, inside its handler.
    async with http.get(gateway.base + created["eventsUrl"], headers={"Origin": APP}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert_cors(r)
        first = await anext(sse_events(r))
        assert first.name == "status" and first.data["jobId"] == created["jobId"]
    async with http.get(gateway.base + "/client/docjobs.js", headers={"Origin": APP}) as r:
        assert r.status == 200
        assert_cors(r)
    # Another origin: the same answers, without a CORS header (the browser keeps them from its page).
    async with http.get(gateway.base + f"/api/jobs/{created['jobId']}",
                        headers={**bearer("cors-user"), "Origin": OTHER}) as r:
        assert r.status == 200
        assert_cors(r, None)
    async with http.get(gateway.base + "/client/docjobs.js", headers={"Origin": OTHER}) as r:
        assert r.status == 200
        assert_cors(r, None)


async def test_without_origins_the_gateway_is_same_origin_only(http, jobstore) -> None:
    gateway = await start_gateway(jobstore.address)
    try:
        async with http.options(gateway.base + "/api/jobs", headers={
                "Origin": APP, "Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "cors_origin_not_allowed"
        async with http.get(gateway.base + "/api/jobs", headers={**bearer("u"), "Origin": APP}) as r:
            assert r.status == 200
            assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    finally:
        await gateway.stop()


async def test_the_client_files_are_served_with_their_types_and_an_etag(http, gateway) -> None:
    async with http.get(gateway.base + "/client/docjobs.js") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Content-Type-Options"] == "nosniff"
        etag = r.headers["ETag"]
        assert "export function watchSession" in await r.text()
    async with http.get(gateway.base + "/client/docjobs.js", headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and r.headers["ETag"] == etag
    async with http.get(gateway.base + "/client/docjobs.d.ts") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/typescript; charset=utf-8"
        assert r.headers["ETag"] != etag
        assert "export declare function watchSession" in await r.text()
    async with http.get(gateway.base + "/client/../app.py") as r:
        assert r.status == 404
    async with http.get(gateway.base + "/client/index.html") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
