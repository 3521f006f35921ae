"""Processes that run as another user (the embedded Postgres as root, sandboxed code jobs) get what they
need without docjobs changing the permissions of any directory it did not create: started under a private
(0700) directory, every mode on the way stays as it was, and the process works."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import openpyxl
import pytest

from docjobs.pgserver import POSTGRES_BIN_PATH, RELOCATED_ROOT, EmbeddedPostgres
from renderer.sandbox.client import Sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="as root only: otherwise nothing runs as another user")

SPEC_LIMITS = {"timeout_s": 60.0, "cpu_s": 30, "memory_mb": 1024, "file_mb": 100, "processes": 16}
CODE_LIMITS = {"timeout_s": 20.0, "cpu_s": 10, "memory_mb": 512, "file_mb": 20, "processes": 8}

# A scratch file by its absolute path, as libraries do through tempfile: the job's own uid must be able to
# pass through every directory above its job directory.
SCRATCH_CODE = """
import os, tempfile
from openpyxl import Workbook
with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
    f.write(b"scratch")
assert os.path.isabs(f.name), f.name
with open(f.name) as again:
    text = again.read()
wb = Workbook()
wb.active["A1"] = text
wb.active["A2"] = os.getuid()
wb.save(output_path)
"""


def modes(path: Path) -> dict[str, str]:
    """The modes of `path` and of the two directories above it (the test's own)."""
    return {str(p): f"{stat.S_IMODE(p.stat().st_mode):04o}" for p in (path, path.parent, path.parent.parent)}


def install_programs(site_packages: Path) -> Path:
    """A copy of the embedded Postgres wheel's programs as pip lays them out, under `site_packages`."""
    package = POSTGRES_BIN_PATH.parent.parent
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, site_packages / package.name / "pginstall" / part, symlinks=True)
    libraries = package.parent / f"{package.name}.libs"
    shutil.copytree(libraries, site_packages / libraries.name, symlinks=True)
    return site_packages / package.name / "pginstall"


@pytest.fixture
def private(tmp_path: Path) -> Path:
    directory = tmp_path / "private"
    directory.mkdir()
    directory.chmod(0o700)
    return directory


async def test_the_embedded_postgres_under_a_private_directory_leaves_its_mode_alone(private: Path) -> None:
    before = modes(private)
    server = EmbeddedPostgres(private / "pg")
    server.start()
    try:
        assert modes(private) == before
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        finally:
            await conn.close()
        server.stop()
        server.start()  # the same cluster again, through base_dir/pgdata
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT n FROM kept") == 7
        finally:
            await conn.close()
    finally:
        server.stop()
    assert modes(private) == before
    # Its cluster lives in a directory made for it, linked from base_dir/pgdata ...
    home = (private / "pg" / "pgdata").resolve().parent
    assert home.parent == RELOCATED_ROOT and (private / "pg" / "pgdata").is_symlink()
    # ... and goes when base_dir goes: the next relocated start removes it.
    shutil.rmtree(private / "pg")
    other = EmbeddedPostgres(private / "other")
    other.start()
    other.stop()
    assert not home.exists()
    shutil.rmtree((private / "other" / "pgdata").resolve().parent)


async def test_the_embedded_postgres_installed_under_a_private_directory_runs_from_a_copy(private: Path) -> None:
    # A checkout in root's home (mode 0700): the server's own user cannot reach the programs as installed.
    installed = install_programs(private / "venv")
    before = modes(installed)
    server = EmbeddedPostgres(private / "pg", programs=installed / "bin")
    server.start()
    try:
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        server.stop()
    assert modes(installed) == before
    copy = server.programs.parent
    copy = copy.parent.parent  # programs-<key>/embedded_postgres/pginstall
    assert copy.parent == RELOCATED_ROOT and copy.name.startswith("programs-")
    # The copy goes once its installation is gone, at the next start that needs a copy.
    shutil.rmtree(private / "venv")
    moved = install_programs(private / "venv2")
    again = EmbeddedPostgres(private / "again", programs=moved / "bin")
    again.start()
    again.stop()
    assert not copy.exists()
    assert again.programs.parents[3] == RELOCATED_ROOT
    clusters = [(private / name / "pgdata").resolve().parent for name in ("pg", "again")]
    for relocated in (again.programs.parents[2], *clusters):
        shutil.rmtree(relocated)


async def test_code_jobs_under_a_private_directory_run_without_opening_it(private: Path) -> None:
    before = modes(private)
    box = Sandbox(private / "sandbox", CODE_LIMITS, SPEC_LIMITS, code=True)
    await box.start()
    try:
        result = await box.render(box.new_render_id(), "spreadsheet", "code", SCRATCH_CODE, "t",
                                  lambda _p, _m: None)
        sheet = openpyxl.load_workbook(result.path).active
        assert sheet is not None
        assert sheet["A1"].value == "scratch" and sheet["A2"].value != 0  # read back as a uid of its own
        assert modes(private) == before
    finally:
        await box.stop()
    assert modes(private) == before


# The same sandbox where the kernel refuses it namespaces (root without CAP_SYS_ADMIN, as in a default Docker
# container): code jobs cannot be isolated, so it refuses to start, having changed no mode on the way.
WITHOUT_NAMESPACES = """
import asyncio, json, sys
from pathlib import Path
from renderer.sandbox.client import Sandbox

async def main():
    box = Sandbox(Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), code=True)
    try:
        await box.start()
    except RuntimeError as exc:
        print(json.dumps({"refused": str(exc)}))
    else:
        await box.stop()
        print(json.dumps({"refused": None}))

asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop CAP_SYS_ADMIN")
@pytest.mark.parametrize("parent_mode", [0o700, 0o755])
def test_code_jobs_without_namespaces_are_refused_without_opening_any_directory(parent_mode: int) -> None:
    # Outside pytest's own temporary directories, which are private themselves.
    parent = Path(tempfile.mkdtemp(prefix="docjobs-test-"))
    try:
        parent.chmod(parent_mode)
        before = modes(parent)
        result = subprocess.run(
            ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", sys.executable, "-c",
             WITHOUT_NAMESPACES, str(parent / "sandbox"), json.dumps(CODE_LIMITS), json.dumps(SPEC_LIMITS)],
            capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.splitlines()[-1])
        assert "code jobs cannot be isolated here" in (report["refused"] or ""), report
        assert modes(parent) == before
    finally:
        shutil.rmtree(parent)
