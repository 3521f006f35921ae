"""The jobstore's shared secret without a server: the setting's reader, `docjobs up`'s choice of it, and
the interceptor's comparison and its rate-limited log."""

from __future__ import annotations

import logging

import pytest

from docjobs.channels import TOKEN_ENV, bearer, grpc_token, new_token
from docjobs.settings import SettingsError
from docjobs.stack import StackSettings
from jobstore.auth import BearerTokenInterceptor


@pytest.mark.parametrize(("value", "says"), [
    (None, "is required"),
    ("", "is required"),
    ("x" * 31, "at least 32 bytes, got 31"),
    ("x" * 32 + " ", "printable ASCII"),
    ("x" * 32 + "\n", "printable ASCII"),
    ("é" * 32, "printable ASCII"),
])
def test_the_setting_is_refused_with_a_line_naming_it(value: str | None, says: str) -> None:
    env = {} if value is None else {TOKEN_ENV: value}
    with pytest.raises(SettingsError, match=says) as refused:
        grpc_token(env)
    assert TOKEN_ENV in str(refused.value) and "\n" not in str(refused.value)


def test_a_new_token_is_fresh_and_acceptable() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(grpc_token({TOKEN_ENV: t}) == t for t in tokens)


def test_docjobs_up_makes_one_per_run_unless_one_is_set() -> None:
    first, second = StackSettings.from_env({}), StackSettings.from_env({})
    assert first.grpc_token != second.grpc_token
    assert first.grpc_token not in repr(first)
    given = new_token()
    assert StackSettings.from_env({TOKEN_ENV: given}).grpc_token == given
    with pytest.raises(SettingsError, match=TOKEN_ENV):
        StackSettings.from_env({TOKEN_ENV: "short"})


def test_the_interceptor_accepts_exactly_the_bearer_token() -> None:
    token = new_token()
    check = BearerTokenInterceptor(token)._presented
    assert check((("user-agent", "grpc-python"), bearer(token)))
    assert check((("authorization", f"bearer {token}"),)) and check((("authorization", f"BEARER {token}"),))
    assert not check((("authorization", f"Bearer {token.upper() if token.upper() != token else token.lower()}"),))
    assert not check((("authorization", f"Bearer  {token}"),))
    assert not check(None) and not check(())
    assert not check((("authorization", token),))  # no scheme
    assert not check((("authorization", f"Basic {token}"),))
    assert not check((("authorization", f"Bearer {token} "),))
    assert not check((("authorization", f"Bearer {token[:-1]}é"),))  # not ASCII: refused, no exception
    assert not check((("authorization-bin", f"Bearer {token}".encode()),))
    assert not check((bearer(new_token()),))
    with pytest.raises(ValueError, match=TOKEN_ENV):
        BearerTokenInterceptor("x" * 31)


def test_refusals_are_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    interceptor = BearerTokenInterceptor(new_token(), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="jobstore.auth"):
        for _ in range(50):
            interceptor._note_refusal()
        now[0] += 61
        interceptor._note_refusal()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"refused 1 call(s) without the right {TOKEN_ENV} (UNAUTHENTICATED)",
                     f"refused 50 call(s) without the right {TOKEN_ENV} (UNAUTHENTICATED)"]
