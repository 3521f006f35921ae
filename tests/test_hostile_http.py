"""Hostile HTTP input: a property-based run of schemathesis against the gateway's own OpenAPI document,
over a real gateway and jobstore (processes), finds no 5xx and no response that breaks the document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import create_database
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
