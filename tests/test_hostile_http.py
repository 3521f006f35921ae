"""Hostile HTTP input, against a real gateway and jobstore (processes): every answer is a 2xx or a 4xx
in the JSON error shape (a 503 only while the jobstore is away), never a 5xx, and nothing a caller sends
puts a traceback in the gateway's log.

Inputs that were 500s, one test each; then properties: schemathesis over the gateway's own OpenAPI
document, and hypothesis over the headers (Authorization, Last-Event-ID, Idempotency-Key), the URL
token, the job id in the path and the body. All derandomized: a failure reproduces, and the run is the
same every time."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from docjobs.urltokens import URL_TOKEN_AUDIENCE
from gateway.auth import SESSION_URL_AUDIENCE

from .conftest import create_database, wait_until
from .gateway_client import SECRET, bearer, token
from .processes import GatewayProcess, JobStoreProcess
from .renderers import example

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The event streams never end while their job is pending (a session's never ends): the property tests
# below open them and read only the opening of the answer.
ENDLESS = ("/api/jobs/{jobId}/events", "/api/events")


@dataclass
class LiveGateway:
    port: int
    log: Path
    finished_job: str  # a cancelled job of the user "fuzzer", whose stream answers at once

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def assert_no_traceback(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text, text[text.index("Traceback") - 300:][:3000]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(port: int, method: str, target: bytes | str, headers: Iterable[tuple[bytes, bytes]] = (),
         body: bytes = b"") -> Reply:
    """One request with exactly these bytes (no client library in between to refuse or re-encode a
    header). An event stream's answer is its status and headers: the stream itself is not read."""
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: %d" % len(body), *(name + b": " + value for name, value in headers)]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = {name.strip().lower(): value.strip()
                  for name, _, value in (line.partition(":") for line in header_lines)}
        if fields.get("content-type", "").startswith("text/event-stream"):
            return Reply(int(status_line.split()[1]), fields, b"")
        length = int(fields.get("content-length", "-1"))
        while (length < 0 or len(rest) < length) and (chunk := sock.recv(65536)):
            rest += chunk
    return Reply(int(status_line.split()[1]), fields, rest)


def assert_answered(reply: Reply, *allowed: int) -> None:
    """A 2xx, or a 4xx in the JSON error shape; no 5xx but a 503 (the jobstore is away)."""
    assert reply.status < 500 or reply.status == 503, reply
    if allowed:
        assert reply.status in allowed, reply
    if reply.status >= 400:
        assert reply.headers["content-type"].startswith("application/json"), reply
        error = reply.json()["error"]
        assert set(error) <= {"code", "message", "field"}, reply
        assert isinstance(error["code"], str) and error["code"], reply
        assert isinstance(error["message"], str) and error["message"], reply
        assert isinstance(error.get("field", "-"), str) and error.get("field", "-"), reply


def auth(user: str = "fuzzer") -> tuple[bytes, bytes]:
    return b"Authorization", f"Bearer {token(user)}".encode()


JSON_BODY = (b"Content-Type", b"application/json")


@pytest.fixture(scope="module")
def live_gateway(pg, template_db, tmp_path_factory) -> Iterator[LiveGateway]:
    database_url = asyncio.run(create_database(pg, template_db))
    logs: Path = tmp_path_factory.mktemp("hostile-http")
    jobstore = JobStoreProcess(database_url, log_path=logs / "jobstore.log").start()
    gateway = None
    try:
        jobstore.wait_healthy()
        gateway = GatewayProcess(jobstore.address, logs / "gateway.log").start()
        gateway.wait_ready()
        created = http(gateway.port, "POST", "/api/jobs", [auth(), JSON_BODY], json.dumps(example("pdf")).encode())
        assert created.status == 202, created
        job_id = created.json()["jobId"]
        assert http(gateway.port, "DELETE", f"/api/jobs/{job_id}", [auth()]).status == 200
        yield LiveGateway(gateway.port, logs / "gateway.log", job_id)
    finally:
        if gateway is not None:
            gateway.stop()
        jobstore.terminate()
        if gateway is not None:
            LiveGateway(gateway.port, logs / "gateway.log", "").assert_no_traceback()


@pytest.fixture
def gateway(live_gateway: LiveGateway) -> Iterator[LiveGateway]:
    yield live_gateway
    live_gateway.assert_no_traceback()


# --- inputs that were 500s -------------------------------------------------------------------------

def _post(gateway: LiveGateway, body: dict[str, Any] | bytes, *headers: tuple[bytes, bytes]) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # "\ud800" goes as its escape
    return http(gateway.port, "POST", "/api/jobs", [auth(), JSON_BODY, *headers], raw)


@pytest.mark.parametrize("field", ["title", "sessionId", "messageId"])
def test_a_lone_surrogate_in_a_text_field_is_a_422_naming_it(gateway: LiveGateway, field: str) -> None:
    reply = _post(gateway, {**example("pdf"), field: "chapter \ud800"})
    assert_answered(reply, 422)
    assert reply.json()["error"]["field"] == field and "surrogate" in reply.json()["error"]["message"]


SPREADSHEET = example("spreadsheet")


def _with_cell(value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(SPREADSHEET))
    body["spec"]["sheets"][0]["rows"][0][1] = value
    return body


@pytest.mark.parametrize(("body", "field", "words"), [
    (_with_cell(float("nan")), "spec.sheets[0].rows[0][1]", "NaN"),
    (_with_cell(float("inf")), "spec.sheets[0].rows[0][1]", "Infinity"),
    (_with_cell(float("-inf")), "spec.sheets[0].rows[0][1]", "Infinity"),
    (json.dumps(SPREADSHEET).replace('"rows": [[', '"rows": [[1e400, ', 1).encode(), "spec.sheets[0].rows[0][0]",
     "1.8e308"),
    (_with_cell("Q3 \udc00"), "spec.sheets[0].rows[0][1]", "surrogate"),
    ({**SPREADSHEET, "spec": {**SPREADSHEET["spec"], "\ud800": 1}}, "spec", "surrogate"),
    (_with_cell("a\x00b"), "spec.sheets[0].rows[0][1]", "NUL"),
    ({"documentType": "document", "code": "print('\ud800')"}, "code", "surrogate"),
    ({"documentType": "document", "code": "print('\x00')"}, "code", "NUL"),
], ids=["nan", "infinity", "-infinity", "1e400", "surrogate", "surrogate-key", "nul", "code-surrogate",
        "code-nul"])
def test_what_the_database_cannot_store_is_a_422_in_our_words(gateway: LiveGateway, body: Any, field: str,
                                                                words: str) -> None:
    reply = _post(gateway, body)
    assert_answered(reply, 422)
    error = reply.json()["error"]
    assert error["field"] == field and words in error["message"], error
    assert "database" not in error["message"] and "json" not in error["message"], error


@pytest.mark.parametrize(("raw", "status", "field"), [
    (b'{"documentType": "pdf", "spec": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "body"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    (b'{"documentType": "pdf", "spec": {"blocks": ' + b"[" * 100 + b"]" * 100 + b"}}", 422,
     "spec.blocks" + "[0]" * 63),
], ids=["1000-deep", "100000-deep", "100-deep"])
def test_json_nested_deeply_is_a_4xx(gateway: LiveGateway, raw: bytes, status: int, field: str) -> None:
    reply = _post(gateway, raw)
    assert_answered(reply, status)
    assert reply.json()["error"]["field"] == field and "64 levels" in reply.json()["error"]["message"]


@pytest.mark.parametrize("key", ["é".encode(), "é".encode("latin-1"), b"\xed\xa0\x80", b"caf\xc3\xa9-1"])
def test_a_non_ascii_idempotency_key_is_a_400_naming_it(gateway: LiveGateway, key: bytes) -> None:
    reply = _post(gateway, example("pdf"), (b"Idempotency-Key", key))
    assert_answered(reply, 400)
    assert reply.json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("value", ["Bearer é.é.é".encode(), "Bearer é.é.é".encode("latin-1"),
                                   b"Bearer \xed\xa0\x80.e30.x", "Bearer 令牌.令牌.令牌".encode()])
def test_a_token_that_is_not_ascii_is_a_clean_401(gateway: LiveGateway, value: bytes) -> None:
    for target in ("/api/jobs", f"/api/jobs/{gateway.finished_job}/events"):
        reply = http(gateway.port, "GET", target, [(b"Authorization", value)])
        assert_answered(reply, 401)
        assert reply.json()["error"]["code"] == "unauthenticated"
    # (the gateway fixture then checks that the log holds no traceback)


def test_a_job_id_that_is_no_uuid_is_a_404_naming_it(gateway: LiveGateway) -> None:
    for path in ("/api/jobs/%ED%A0%80", "/api/jobs/%E9/status", "/api/jobs/x%00y/events", "/api/jobs/1/artifact"):
        reply = http(gateway.port, "GET", path, [auth()])
        assert_answered(reply, 404)
        assert reply.json()["error"]["field"] == "jobId"


def test_a_body_aiohttp_cannot_decode_is_a_400_in_json(gateway: LiveGateway) -> None:
    reply = _post(gateway, b"this is not gzip", (b"Content-Encoding", b"gzip"))
    assert_answered(reply, 400)
    assert reply.json()["error"]["field"] == "body" and "gzip" in reply.json()["error"]["message"]
    reply = _post(gateway, gzip.compress(json.dumps(example("pdf")).encode()), (b"Content-Encoding", b"gzip"))
    assert_answered(reply, 202)  # a body that is gzip is read


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_a_body_in_brotli_or_zstandard_is_read_and_a_broken_one_is_a_400_in_json(gateway: LiveGateway,
                                                                                  encoding: str) -> None:
    """aiohttp refused these encodings before any handler, in plain text naming a package to install."""
    import brotli
    from backports import zstd

    compress = brotli.compress if encoding == "br" else zstd.compress
    reply = _post(gateway, compress(json.dumps(example("pdf")).encode()), (b"Content-Encoding", encoding.encode()))
    assert_answered(reply, 202)
    reply = _post(gateway, b"this is not " + encoding.encode(), (b"Content-Encoding", encoding.encode()))
    assert_answered(reply, 400)
    assert reply.json()["error"]["field"] == "body"
    bomb = b'{"title": "' + b"0" * 64 * 1024 * 1024 + b'"}'  # 64 MiB that compress to a few kB
    packed = brotli.compress(bomb, quality=1) if encoding == "br" else zstd.compress(bomb, level=1)
    assert len(packed) < 1024 * 1024
    reply = _post(gateway, packed, (b"Content-Encoding", encoding.encode()))
    assert_answered(reply, 413)


def test_an_expectation_other_than_100_continue_is_a_417_in_json(gateway: LiveGateway) -> None:
    reply = _post(gateway, example("pdf"), (b"Expect", b"the-impossible"))
    assert_answered(reply, 417)
    assert reply.json()["error"]["field"] == "Expect"
    # 100-continue still works: the interim answer first, then the body is read.
    body = json.dumps(example("pdf")).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n%s: %s\r\n\r\n" % (len(body), *auth()))
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(12) == b"HTTP/1.1 202"


def test_a_client_that_resets_as_its_answer_starts_costs_no_500_and_no_traceback(gateway: LiveGateway) -> None:
    """A client that sends its request and resets the connection at once (a tab closed, a network gone):
    writing the answer's head failed, and the gateway logged an unexpected error with its traceback and a
    500 for every such request."""
    target = "/api/events?sessionId=reset-session"

    def logged() -> list[str]:  # the requests' access-log lines
        return [line for line in gateway.log.read_text(errors="replace").splitlines() if f"GET {target} " in line]

    for _ in range(10):
        before = len(logged())
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # its close is a reset
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s: %s\r\n\r\n" % (target.encode(), *auth()))
        sock.close()
        # Its line once the gateway gave its answer up (none if its handler was cancelled before writing).
        deadline = time.monotonic() + 3
        while len(logged()) == before and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(logged()) >= 5, logged()  # most reach the write of their answer's head
    assert not [line for line in logged() if '" 500 ' in line], logged()
    gateway.assert_no_traceback()


# --- properties ------------------------------------------------------------------------------------

def test_no_5xx_and_every_response_matches_the_openapi_document(gateway: LiveGateway) -> None:
    # Each operation of the document but the endless streams, driven by hypothesis through
    # schemathesis' strategies (valid and invalid data). Its pytest plugin does not support this pytest.
    schema = schemathesis.openapi.from_url(gateway.base + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document holds no operation schemathesis cannot read
        if result.ok().path not in ENDLESS:
            operations.append(result.ok())
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case[Any]) -> None:
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(headers=bearer("fuzzer"), checks=CHECKS, timeout=30)

        run()
    assert len(calls) == len(operations)  # every operation was exercised


PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
# What a header field may carry (RFC 9110: visible ASCII, space, tab, and any byte from 0x80): bytes
# outside it are refused by aiohttp's parser before the application sees the request.
FIELD_BYTES = frozenset(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))
TEXT = st.text(st.one_of(st.characters(codec=None, exclude_categories=()),
                         st.sampled_from(["\ud800", "\udfff", "\x00", "\\", "é", "\u202e", "\ufeff"])),
               max_size=40)


def _field(raw: bytes) -> bytes:
    return bytes(b for b in raw if b in FIELD_BYTES)


header_values = st.one_of(
    st.binary(max_size=60).map(_field),
    TEXT.map(lambda text: _field(text.encode("utf-8", "surrogatepass"))),
    TEXT.map(lambda text: _field(text.encode("latin-1", "replace"))),
    st.integers(-(2**80), 2**80).map(lambda n: str(n).encode()),
)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _signed(header: bytes, claims: bytes) -> bytes:
    """A JWT with these exact header and payload bytes, signed with the gateway's secret."""
    signing_input = _b64(header) + b"." + _b64(claims)
    return signing_input + b"." + _b64(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
NOW = int(time.time())
TIMES = st.one_of(st.integers(NOW - 10**6, NOW + 10**6), st.integers(-(2**70), 2**70), st.floats(), TEXT,
                  st.integers(NOW, NOW + 10**6).map(str))
CLAIMS = st.fixed_dictionaries({}, optional={"sub": st.one_of(TEXT, JSON_VALUES), "exp": TIMES, "iat": TIMES,
                                             "nbf": TIMES, "aud": JSON_VALUES, "job": JSON_VALUES})
TOKENS = st.one_of(
    header_values,
    st.lists(header_values, min_size=2, max_size=4).map(b".".join),
    CLAIMS.map(lambda claims: _signed(b'{"alg":"HS256","typ":"JWT"}',
                                      json.dumps(claims).encode("utf-8", "surrogatepass"))),
    st.tuples(JSON_VALUES, JSON_VALUES).map(lambda pair: _signed(
        json.dumps(pair[0]).encode("utf-8", "surrogatepass"), json.dumps(pair[1]).encode("utf-8", "surrogatepass"))),
)
AUTHORIZATION = st.one_of(
    header_values,
    st.tuples(st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b""]), TOKENS).map(b" ".join),
)


def test_any_authorization_header_is_a_200_or_a_401(gateway: LiveGateway) -> None:
    @given(value=AUTHORIZATION)
    @PROPERTY
    def run(value: bytes) -> None:
        assert_answered(http(gateway.port, "GET", "/api/jobs?pageSize=1", [(b"Authorization", value)]), 200, 401)

    run()


def test_any_url_token_is_answered_in_json(gateway: LiveGateway) -> None:
    @given(value=TOKENS)
    @PROPERTY
    def run(value: bytes) -> None:
        for target in (f"/api/jobs/{gateway.finished_job}/events?", f"/api/jobs/{gateway.finished_job}/artifact?",
                       "/api/events?", "/api/events?sessionId=s&"):
            reply = http(gateway.port, "GET", target.encode() + b"token=" + quote_from_bytes(value).encode())
            assert_answered(reply, 401)

    run()


@pytest.mark.parametrize("sub", ["\ud800", "a\u0000b", "", 5, None, ["x"], "u" * 201])
def test_a_signed_link_token_whose_sub_is_no_user_id_is_a_401(gateway: LiveGateway, sub: Any) -> None:
    """A link token's user was taken as written: a lone surrogate failed as a 500 (it cannot be encoded), a
    NUL as a 422 in the jobstore's words. Signing one takes the secret (public in no-auth mode)."""
    now = int(time.time())
    job = {"aud": URL_TOKEN_AUDIENCE, "job": gateway.finished_job, "iat": now, "exp": now + 60}
    session = {"aud": SESSION_URL_AUDIENCE, "iat": now, "exp": now + 60}
    for claims, target in ((job, f"/api/jobs/{gateway.finished_job}/events"),
                           (job, f"/api/jobs/{gateway.finished_job}/artifact"), (session, "/api/events")):
        token = _signed(b'{"alg":"HS256","typ":"JWT"}', json.dumps({**claims, "sub": sub}).encode())
        reply = http(gateway.port, "GET", f"{target}?token={token.decode()}")
        assert_answered(reply, 401)


def test_any_scope_claim_is_a_user_or_a_service_never_an_error(gateway: LiveGateway) -> None:
    """A token of the user fuzzer with any `scope`: a user's (its own jobs) or, with docjobs:service in a
    string, a service's (the jobs of the userId it names): the same 200 either way."""
    scopes = st.one_of(JSON_VALUES, st.lists(st.sampled_from(["docjobs:service", "openid", "", " ", "\t"]),
                                             max_size=4).map(" ".join))

    @given(scope=scopes)
    @PROPERTY
    def run(scope: Any) -> None:
        claims = {"sub": "fuzzer", "exp": int(time.time()) + 600, "scope": scope}
        header = (b"Authorization", b"Bearer " + _signed(b'{"alg":"HS256","typ":"JWT"}',
                                                         json.dumps(claims).encode("utf-8", "surrogatepass")))
        assert_answered(http(gateway.port, "GET", "/api/jobs?pageSize=1&userId=fuzzer", [header]), 200)
        # (429: the session streams of the examples before, which never end, may not all be released yet)
        assert_answered(http(gateway.port, "GET", "/api/events?userId=fuzzer", [header]), 200, 429)

    run()


def test_any_session_id_is_answered_in_json(gateway: LiveGateway) -> None:
    @given(value=st.one_of(st.binary(max_size=250), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
    @PROPERTY
    def run(value: bytes) -> None:
        reply = http(gateway.port, "GET", b"/api/events?sessionId=" + quote_from_bytes(value).encode(), [auth()])
        assert_answered(reply, 200, 400, 429)  # (429: as above)

    run()


def test_any_last_event_id_is_answered_in_json(gateway: LiveGateway) -> None:
    @given(value=header_values, in_query=st.booleans(), target=st.sampled_from(
        [f"/api/jobs/{gateway.finished_job}/events", "/api/events"]))
    @PROPERTY
    def run(value: bytes, in_query: bool, target: str) -> None:
        if in_query:
            reply = http(gateway.port, "GET", target.encode() + b"?lastEventId=" + quote_from_bytes(value).encode(),
                         [auth()])
        else:
            reply = http(gateway.port, "GET", target, [auth(), (b"Last-Event-ID", value)])
        assert_answered(reply, 200, 400, 429)  # (429: as above)

    run()


def test_any_idempotency_key_is_answered_in_json(gateway: LiveGateway) -> None:
    body = json.dumps(example("pdf")).encode()

    @given(value=header_values)
    @PROPERTY
    def run(value: bytes) -> None:
        reply = http(gateway.port, "POST", "/api/jobs", [auth(), JSON_BODY, (b"Idempotency-Key", value)], body)
        assert_answered(reply, 202, 400)

    run()


def test_any_job_id_in_the_path_is_answered_in_json(gateway: LiveGateway) -> None:
    @given(value=st.one_of(st.binary(min_size=1, max_size=40), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))),
           suffix=st.sampled_from(["", "/status", "/events", "/artifact"]), method=st.sampled_from(["GET", "DELETE"]))
    @PROPERTY
    def run(value: bytes, suffix: str, method: str) -> None:
        path = b"/api/jobs/" + quote_from_bytes(value, safe=b"").encode() + suffix.encode()
        assert_answered(http(gateway.port, method, path, [auth()]), 404, 405)  # (405: DELETE on /status)

    run()


BODIES = st.one_of(
    st.fixed_dictionaries(
        {"documentType": st.sampled_from(["pdf", "document", "spreadsheet", "presentation", "video"])},
        optional={"title": TEXT, "sessionId": TEXT, "messageId": TEXT, "spec": JSON_VALUES, "code": TEXT,
                  "priority": JSON_SCALARS, "userId": JSON_SCALARS}).map(
        lambda body: json.dumps(body).encode()),
    st.tuples(st.sampled_from([b"[", b"{\"a\":"]), st.integers(1, 3000)).map(
        lambda pair: b'{"documentType": "pdf", "spec": ' + pair[0] * pair[1] + b"}"),
    JSON_VALUES.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
    st.binary(max_size=80),
)


def test_any_body_is_answered_in_json(gateway: LiveGateway) -> None:
    @given(body=BODIES)
    @PROPERTY
    def run(body: bytes) -> None:
        assert_answered(http(gateway.port, "POST", "/api/jobs", [auth(), JSON_BODY], body), 202, 400, 403, 422)

    run()


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


async def test_every_route_that_reads_a_body_cuts_off_one_that_trickles(jobstore) -> None:
    """A service's batch and redrive read bodies too: each route gives a trickling body DOCJOBS_BODY_TIMEOUT_S,
    then a 408 naming the body (the redrive once waited for as long as the client kept sending)."""
    from .gateway_client import start_gateway

    gateway = await start_gateway(jobstore.address, body_timeout_s=0.5)
    port = int(gateway.base.rsplit(":", 1)[1])
    service = f"Bearer {token('chat-backend', scope='docjobs:service')}"
    stop = asyncio.Event()
    try:
        for path, auth in (("/api/jobs", f"Bearer {token('slow')}"), ("/api/jobs/batch", service),
                           ("/api/jobs/redrive", service)):
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").encode()
            answer = await asyncio.wait_for(_trickle(port, head, stop), 20)
            assert answer.startswith(b"HTTP/1.1 408") and b'"field": "body"' in answer, (path, answer[:300])
    finally:
        stop.set()
        await gateway.stop()


async def test_slow_and_flooding_clients_do_not_starve_the_others(jobstore, tmp_path) -> None:
    from .gateway_client import read_sse, start_gateway
    from .renderers import RendererProcess, example

    gateway = await start_gateway(jobstore.address, body_timeout_s=1.0, sse_streams_per_user=3)
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    port = int(gateway.base.rsplit(":", 1)[1])
    stop = asyncio.Event()
    auth = bearer("slow").popitem()
    slow = (
        # headers that never end
        [asyncio.create_task(_trickle(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", stop)) for _ in range(150)]
        # a body that never ends
        + [asyncio.create_task(_trickle(port, (
            f"POST /api/jobs HTTP/1.1\r\nHost: x\r\n{auth[0]}: {auth[1]}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{").encode(), stop)) for _ in range(40)]
    )
    # connections that say nothing at all
    silent = [asyncio.create_task(asyncio.open_connection("127.0.0.1", port)) for _ in range(150)]
    attackers: list[asyncio.Task[Any]] = [*slow, *silent]
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
            slow_posts = slow[150:190]
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
        for connection in silent:
            if not connection.cancelled() and connection.exception() is None:
                connection.result()[1].close()
        await gateway.stop()
        await renderer.shutdown()
