"""What every way in judges alike in a job request's body (POST /api/jobs, a batch, a pg-boss job's data):
the document asked for and the user a service names, with the HTTP API's field names and messages. Each
caller turns a RequestProblem into its own answer (a 422, a failed pg-boss job)."""

from __future__ import annotations

from typing import Any

from . import jobtypes, jsonvalues, specs

MAX_USER_NUMBER = 2**63 - 1  # a numeric userId: what Postgres' bigint holds, as text


class RequestProblem(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_user_id(value: str) -> bool:
    """What the jobstore takes as a user id: a protobuf string (no lone surrogate), at most 200
    characters, without control characters."""
    return (bool(value) and len(value) <= 200 and not any(ord(c) < 32 for c in value)
            and jsonvalues.text_problem(value) is None)


def document(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The job type and the payload's document (`{"spec": ...}`, checked against its schema, or
    `{"code": ...}`) of a body already checked for what JSON cannot carry on (jsonvalues)."""
    job_type = body.get("documentType")
    if not isinstance(job_type, str) or job_type not in jobtypes.JOB_TYPES:
        raise RequestProblem("documentType", f"must be one of {', '.join(jobtypes.JOB_TYPES)}")
    has_spec, has_code = "spec" in body, "code" in body
    if has_spec == has_code:
        raise RequestProblem("spec", "give spec (a document description) or code, exactly one of them")
    if has_code and (not isinstance(body["code"], str) or not body["code"].strip()):
        raise RequestProblem("code", "must be a non-empty string")
    if has_spec:
        try:
            specs.validate(job_type, body["spec"])
        except specs.SpecError as exc:
            raise RequestProblem(exc.path, exc.message) from None
    return job_type, ({"spec": body["spec"]} if has_spec else {"code": body["code"]})


def named_user(value: Any) -> str:
    """A `userId` as a service names the user: a string, or an integer (123 is the user "123")."""
    if value is None:
        raise RequestProblem("userId", "required from a service caller: the user the job is for (a string, or "
                                       "an integer such as 123)")
    if is_int(value):
        if not 0 <= value <= MAX_USER_NUMBER:
            raise RequestProblem("userId", f"a number must be from 0 to {MAX_USER_NUMBER}")
        return str(value)
    if isinstance(value, str):
        if not valid_user_id(value):
            raise RequestProblem("userId", "must be 1 to 200 characters, without control characters")
        return value
    raise RequestProblem("userId", "must be a string or an integer")


def optional_text(body: dict[str, Any], field: str, max_len: int) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestProblem(field, "must be a string")
    if len(value) > max_len:
        raise RequestProblem(field, f"longer than {max_len} characters")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise RequestProblem(field, "must not contain control characters")
    return value
