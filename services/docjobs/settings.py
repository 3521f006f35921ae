"""Reading settings from the environment, once, at process start.

Every reader raises SettingsError with a one-line message naming the variable; each service's main
turns that into a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is present but unusable. The message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    return env_int(env, name, default, minimum=1, maximum=65535)


def data_dir(env: Mapping[str, str]) -> Path:
    """DOCJOBS_DATA_DIR, default `.docjobs/` in the current directory (the checkout under `make run`)."""
    return Path(env_str(env, "DOCJOBS_DATA_DIR", ".docjobs")).expanduser().resolve()


def database_url(env: Mapping[str, str]) -> str | None:
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        return None
    if not url.startswith(("postgres://", "postgresql://")):
        raise SettingsError("DATABASE_URL must start with postgresql:// or postgres://")
    return url


def environ() -> Mapping[str, str]:
    """The process environment, read in one place."""
    return dict(os.environ)


def load_or_exit(program: str, load: Callable[[Mapping[str, str]], T]) -> T:
    """Read a service's settings from the environment; a bad one ends the process with one line naming
    it (and exit status 2), never a traceback."""
    try:
        return load(environ())
    except SettingsError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
