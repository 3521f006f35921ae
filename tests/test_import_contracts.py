"""The import contracts in pyproject.toml (`make lint` and `make test` run lint-imports) do catch what they
forbid: a copy of services/ with one violation of each, imports direct and indirect, breaks every one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# (file of the copy, line added, what lint-imports must then report)
VIOLATIONS = [
    ("gateway/payloads.py", "import asyncpg", "gateway is not allowed to import asyncpg"),
    ("renderer/preview.py", "from jobstore import queries", "renderer is not allowed to import jobstore"),
    # Indirect: the jobstore's metrics endpoint comes from the shared package.
    ("docjobs/metrics_http.py", "import aiohttp", "jobstore is not allowed to import aiohttp"),
    ("jobstore/convert.py", "import openpyxl", "jobstore is not allowed to import openpyxl"),
    ("gateway/openapi.py", "from renderer import worker", "gateway is not allowed to import renderer"),
    ("docjobs/cli.py", "import gateway.app", "docjobs is not allowed to import gateway"),
]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, before the installed (editable) one.
    env = {**os.environ, "PYTHONPATH": str(root / "services")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_services(target: Path) -> Path:
    shutil.copytree(ROOT / "services", target / "services",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "static", "*.json", "*.sql"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_every_contract_breaks_on_a_violation(tmp_path: Path) -> None:
    root = copy_of_the_services(tmp_path)
    kept = lint_imports(root)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert " broken" in kept.stdout and "0 broken" in kept.stdout
    for path, line, _ in VIOLATIONS:
        module = root / "services" / path
        module.write_text(module.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    broken = lint_imports(root)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    for _, _, report in VIOLATIONS:
        assert report in broken.stdout, (report, broken.stdout)
    assert "0 kept" in broken.stdout, broken.stdout
