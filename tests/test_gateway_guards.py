"""What a web page on another origin cannot make the gateway do without CORS: create a job with a
"simple" POST (no preflight: a body labelled text/plain), or read the local no-auth demo through a name
of its own rebound to 127.0.0.1 (DNS rebinding). Over real HTTP, against a real jobstore."""

from __future__ import annotations

import json

import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .conftest import new_user
from .gateway_client import bearer, start_gateway
from .renderers import example


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/json-patch+json", "application/json; charset=latin-1"])
@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/enqueue"])
async def test_a_job_body_not_labelled_json_is_a_415_and_nothing_is_enqueued(
        http, jobstore, stub, content_type, path) -> None:
    gateway = await start_gateway(jobstore.address)
    try:
        user = new_user()
        # A JSON body, as a form or fetch(..., {body, mode: "no-cors"}) sends it from any page.
        headers = {**bearer(user), **({"Content-Type": content_type} if content_type else {})}
        async with http.post(gateway.base + path, data=json.dumps(example("pdf")).encode(),
                             headers=headers, skip_auto_headers=["Content-Type"]) as r:
            assert r.status == 415, await r.text()
            error = (await r.json())["error"]
        assert error["field"] == "Content-Type" and "application/json" in error["message"]
        assert list((await stub.ListJobs(pb.ListJobsRequest(user_id=user))).jobs) == []
    finally:
        await gateway.stop()


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
async def test_a_json_body_is_taken_with_or_without_its_charset(http, jobstore, content_type) -> None:
    gateway = await start_gateway(jobstore.address)
    try:
        async with http.post(gateway.base + "/api/jobs", data=json.dumps(example("pdf")).encode(),
                             headers={**bearer(new_user()), "Content-Type": content_type}) as r:
            assert r.status == 202, await r.text()
    finally:
        await gateway.stop()


async def test_the_no_auth_demo_answers_only_to_loopback_names(http, jobstore, stub) -> None:
    gateway = await start_gateway(jobstore.address, auth="none", jwt_secret="")
    port = gateway.base.rsplit(":", 1)[1]
    try:
        # A rebound name (the browser sends the page's own host) gets nothing: no list, no job, no page.
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example",
                     "10.0.0.1", "127.0.0.2", "[::2]", "", "localhost:http"):
            for method, path in (("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/"),
                                 ("OPTIONS", "/api/jobs")):
                async with http.request(method, gateway.base + path, json=example("pdf"), headers={
                        "Host": host, "Origin": f"http://{host}", "Access-Control-Request-Method": "POST"}) as r:
                    assert r.status == 421, (host, method, path, r.status)
                    error = (await r.json())["error"]
                    assert error["code"] == "host_not_allowed" and error["field"] == "Host"
        assert list((await stub.ListJobs(pb.ListJobsRequest(user_id="local"))).jobs) == []
        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", "[::1]", f"[::1]:{port}"):
            async with http.get(gateway.base + "/api/jobs", headers={"Host": host}) as r:
                assert r.status == 200, (host, await r.text())
        async with http.post(gateway.base + "/api/jobs", json=example("pdf")) as r:  # as the demo page does
            assert r.status == 202
    finally:
        await gateway.stop()


async def test_with_tokens_any_host_is_served(http, jobstore) -> None:
    """Behind an Ingress the Host is the deployment's own name; a rebound page has no token to send."""
    gateway = await start_gateway(jobstore.address)
    try:
        async with http.get(gateway.base + "/api/jobs", headers={**bearer(new_user()), "Host": "docjobs.example"}) as r:
            assert r.status == 200
    finally:
        await gateway.stop()


async def test_the_no_auth_demo_takes_changes_only_from_its_own_page(http, jobstore, stub) -> None:
    """Without tokens, a page on any site could retry or redrive jobs with a POST that has no body (a simple
    request, sent without a preflight: no body, no Content-Type to refuse). Changes from another origin are
    a 403 naming Origin; the demo page's own, a listed origin's and a non-browser caller's still go."""
    gateway = await start_gateway(jobstore.address, auth="none", jwt_secret="",
                                  cors_origins=("http://app.example.test",))
    try:
        async with http.post(gateway.base + "/api/jobs", json=example("pdf")) as r:
            job_id = (await r.json())["jobId"]
        async with http.delete(gateway.base + f"/api/jobs/{job_id}") as r:
            assert r.status == 200
        for method, path in (("POST", f"/api/jobs/{job_id}/retry"), ("POST", "/api/jobs/redrive"),
                             ("DELETE", f"/api/jobs/{job_id}")):
            for origin in ("http://evil.example.test", "null", f"{gateway.base}.evil.example.test"):
                async with http.request(method, gateway.base + path, headers={"Origin": origin},
                                        skip_auto_headers=["Content-Type"]) as r:
                    assert r.status == 403, (method, path, origin, r.status)
                    assert (await r.json())["error"]["field"] == "Origin"
        job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        assert job.status == pb.JOB_STATUS_CANCELLED and job.retry_count == 0  # nothing was retried
        for sent in ({"Origin": gateway.base}, {"Origin": "http://app.example.test"}, {}):
            async with http.post(gateway.base + f"/api/jobs/{job_id}/retry", headers=sent) as r:
                assert r.status == 202, (sent, await r.text())
            async with http.delete(gateway.base + f"/api/jobs/{job_id}") as r:
                assert r.status == 200
        async with http.get(gateway.base + "/api/jobs", headers={"Origin": "http://evil.example.test"}) as r:
            assert r.status == 200  # reading is CORS's to allow or hide, as before
    finally:
        await gateway.stop()
