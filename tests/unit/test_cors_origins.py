"""DOCJOBS_CORS_ORIGINS: exact origins, written as a browser writes its Origin header."""

from __future__ import annotations

import pytest

from docjobs.settings import SettingsError
from gateway.settings import Settings


def origins(raw: str) -> tuple[str, ...]:
    env = {"DOCJOBS_AUTH": "none", "DOCJOBS_GRPC_TOKEN": "g" * 32, "DOCJOBS_CORS_ORIGINS": raw}
    return Settings.from_env(env).cors_origins


def test_origins_are_kept_as_a_browser_sends_them() -> None:
    assert origins("") == ()
    assert origins("https://App.Example.com, http://localhost:5173/ ,https://chat.example.com:443,") == (
        "https://app.example.com", "http://localhost:5173", "https://chat.example.com")
    assert origins("http://a.example:80,http://a.example") == ("http://a.example",)
    assert origins("http://[::1]:3000") == ("http://[::1]:3000",)


@pytest.mark.parametrize("raw", ["*", "https://*.example.com", "app.example.com", "ftp://app.example.com",
                                 "https://app.example.com/chat", "https://app.example.com?x=1",
                                 "https://user@app.example.com", "https://app.example.com:99999", "https://"])
def test_what_is_not_an_origin_is_refused_naming_the_setting(raw: str) -> None:
    with pytest.raises(SettingsError, match="DOCJOBS_CORS_ORIGINS"):
        origins(raw)
