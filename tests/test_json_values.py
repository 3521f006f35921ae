"""What a job's JSON may hold is decided on the parsed value, never on its text (docjobs.jsonvalues; its
unit tests are in tests/unit/test_jsonvalues.py): a real NUL, a lone surrogate, NaN or Infinity is refused
naming its place, at the gateway (422) and at the jobstore (INVALID_ARGUMENT); the six characters
`\\u0000` inside a string are text like any other, and a document holding them is rendered."""

from __future__ import annotations

import io
import json

import aiohttp
import docx
import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .gateway_client import bearer, read_sse, start_gateway
from .helpers import claim
from .renderers import RendererProcess

# A line of Python that removes the escape sequence `\u0000` from a string: legitimate code, and text.
LINE = 's = s.replace("\\\\u0000", "")'
assert LINE.count("\\") == 2 and "\x00" not in LINE


async def test_text_holding_backslash_u0000_is_accepted_and_rendered_end_to_end(jobstore, stub, tmp_path) -> None:
    gateway = await start_gateway(jobstore.address)
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    try:
        async with aiohttp.ClientSession() as http:
            document = {"documentType": "document", "title": LINE,
                        "spec": {"blocks": [{"type": "paragraph", "text": LINE}]}}
            async with http.post(gateway.base + "/api/jobs", json=document, headers=bearer("ada")) as r:
                assert r.status == 202, await r.text()
                created = await r.json()
            stream = await read_sse(http, gateway.base + created["eventsUrl"])
            assert stream.events[-1].name == "job-complete", stream.events[-1]
            async with http.get(gateway.base + stream.events[-1].data["result"]["downloadUrl"]) as r:
                assert r.status == 200
                paragraphs = [p.text for p in docx.Document(io.BytesIO(await r.read())).paragraphs]
            assert LINE in paragraphs
            # Code mode: the code arrives at a worker exactly as it was sent.
            await renderer.shutdown()
            code = f"s = 'a\\\\u0000b'\n{LINE}\nprint(s)\n"
            async with http.post(gateway.base + "/api/jobs", json={"documentType": "document", "code": code},
                                 headers=bearer("ada")) as r:
                assert r.status == 202, await r.text()
        [claimed] = await claim(stub, types=("document",))
        assert json.loads(claimed.job.payload_json) == {"code": code}
    finally:
        await renderer.shutdown()
        await gateway.stop()


@pytest.mark.parametrize(("payload", "what"), [
    ('{"code": "x = \'\\u0000\'"}', "code: contains the NUL character"),
    ('{"spec": {"\\u0000": 1}}', "spec: a key contains the NUL character"),
    ('{"spec": {"title": "\\udfff"}}', "spec.title: contains a lone surrogate"),
    ('{"spec": {"n": [NaN]}}', "spec.n[0]: nan"),
    ('{"spec": {"n": -Infinity}}', "spec.n: -inf"),
    ('{"spec": {"n": 1e999}}', "spec.n: inf"),
    ('{"spec": ' + "[" * 2000 + "]" * 2000 + "}", "nested more than 64 levels deep"),
    ('{"spec": {"n": ' + "7" * 5000 + "}}", "not valid JSON (Exceeds the limit (4300 digits)"),
])
async def test_the_jobstore_refuses_what_jsonb_cannot_hold_in_its_own_words(stub, payload: str, what: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Enqueue(pb.EnqueueRequest(job_type="document", user_id="u", payload_json=payload))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith("payload_json: ") and what in details, details
    assert "database" not in details
    assert ("docjobs-field", "payload_json") in tuple(err.value.trailing_metadata())


async def test_the_jobstore_stores_backslash_u0000_text_as_sent(stub) -> None:
    payload = json.dumps({"code": LINE})
    reply = await stub.Enqueue(pb.EnqueueRequest(job_type="document", user_id="u", payload_json=payload))
    job = await stub.GetJob(pb.GetJobRequest(job_id=reply.job.id, include_payload=True))
    assert json.loads(job.payload_json) == {"code": LINE}
    # A worker's result is held to the same rule, on its parsed value.
    [claimed] = await claim(stub, types=("document",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token,
                                               result_json='{"preview": "\\u0000"}'))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "result_json" in (err.value.details() or "")
    done = await stub.Complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token,
                                                  result_json=json.dumps({"preview": LINE})))
    assert json.loads(done.result_json)["preview"] == LINE
