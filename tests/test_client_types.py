"""The browser client's TypeScript declarations (/client/docjobs.d.ts) hold: `tsc` (pinned in
tests/typescript/package.json, installed by `make setup`) accepts an app written against them, in strict
mode, and rejects its misuses; and the module exports exactly what the declarations declare."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPESCRIPT = ROOT / "tests" / "typescript"
CLIENT = ROOT / "services" / "gateway" / "static" / "client"


def test_the_declarations_type_check_an_app_that_uses_them() -> None:
    tsc = TYPESCRIPT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail("tsc is missing: `make setup` installs it (npm install --prefix tests/typescript)")
    result = subprocess.run([str(tsc), "-p", str(TYPESCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_module_exports_what_the_declarations_declare() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing (Debian's nodejs package)")
    # Imported as any app would, outside a browser: it touches no DOM until an element is made.
    script = f"import * as m from {json.dumps((CLIENT / 'docjobs.js').as_uri())}; " \
             "console.log(JSON.stringify(Object.keys(m).sort()))"
    result = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    declared = re.findall(r"^export declare (?:function|class) (\w+)", (CLIENT / "docjobs.d.ts").read_text(), re.M)
    assert exported == sorted(declared)
