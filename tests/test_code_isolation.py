"""Code jobs in their boxes, tried as an attacker would. Each test is named by the class of attack it
tries; a real code zygote runs the jobs (as root here, and as an ordinary user in the last tests):

* one user's job reads another's (its own memory, gc, frames, files, /proc) while both run;
* a job sees other processes, the network, the checkout, the data directory or the Postgres log;
* a job makes new namespaces, mounts, traces, or reaches the kernel's keyring, BPF, perf, io_uring,
  modules or reboot;
* a job fills its scratch space while another runs;
* a renderer where the box cannot be built runs code anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import psutil
import pytest

from docjobs.exits import EXIT_DO_NOT_RESTART
from docjobs.pgserver import EmbeddedPostgres
from renderer.sandbox.client import RenderError, RenderResult, Sandbox
from renderer.sandbox.codebox import MAX_JOBS_AS_ROOT, runtime_paths
from renderer.sandbox.codezygote import SPARE_NAME

from .conftest import wait_until
from .renderers import as_nobody

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the probes use x86_64 syscall numbers")

ROOT = Path(__file__).resolve().parent.parent
SPEC_LIMITS = {"timeout_s": 60.0, "cpu_s": 30, "memory_mb": 1024, "file_mb": 100, "processes": 16}
CODE_LIMITS = {"timeout_s": 30.0, "cpu_s": 20, "memory_mb": 512, "file_mb": 100, "processes": 8, "tmpfs_mb": 48}

SAVE_REPORT = """
from openpyxl import Workbook
wb = Workbook()
wb.active["A1"] = json.dumps(report)[:32000]
wb.save(output_path)
"""

# What a job can see and do, reported as JSON in cell A1 of its workbook.
PROBE = """
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
report = {"uid": os.getuid()}
report["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = []
for pid in report["pids"]:
    try:
        cmdlines.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()[:120])
    except OSError:
        pass
report["cmdlines"] = cmdlines
report["interfaces"] = [name for _, name in socket.if_nameindex()]
def connect(address):
    try:
        socket.create_connection(address, timeout=2).close()
        return "connected"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
report["tcp to the host"] = connect(("127.0.0.1", PORT))
report["tcp out"] = connect(("1.1.1.1", 53))
report["visible"] = {path: os.path.exists(path) for path in PATHS}
report["root"] = sorted(os.listdir("/"))
report["oom_score_adj"] = open("/proc/self/oom_score_adj").read().strip()
def outcome(result):
    if result == 0 or result > 0:
        return "allowed"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def syscall(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    if result == 0 and number == 56:  # a clone that went through: this is the child
        os._exit(0)
    return outcome(result)
NEWUSER, NEWNS, NEWNET, NEWPID = 0x10000000, 0x20000, 0x40000000, 0x20000000
report["calls"] = {
    "unshare": syscall(272, NEWUSER | NEWNS | NEWNET),
    "unshare(user)": syscall(272, NEWUSER),
    "clone(newuser)": syscall(56, NEWUSER | 17, 0, 0, 0, 0),
    "clone(newpid)": syscall(56, NEWPID | 17, 0, 0, 0, 0),
    "clone3": syscall(435, 0, 0),
    "setns": syscall(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0),
    "mount": syscall(165, 0, 0, 0, 0, 0),
    "ptrace": syscall(101, 0, 0, 0, 0),
    "keyctl": syscall(250, 0, -3, 0),
    "bpf": syscall(321, 0, 0, 0),
    "perf_event_open": syscall(298, 0, 0, -1, -1, 0),
    "io_uring_setup": syscall(425, 1, 0),
    "init_module": syscall(175, 0, 0, 0),
    "finit_module": syscall(313, -1, 0, 0),
    "reboot": syscall(169, 0, 0, 0, 0),
}
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
report["status"] = {key: status[key].strip() for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")}
report["uid_map"] = open("/proc/self/uid_map").read().split()
""" + SAVE_REPORT


def first_cell(path: Path) -> Any:
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    return sheet["A1"].value


def report_of(result: RenderResult) -> dict[str, Any]:
    value = first_cell(result.path)
    assert isinstance(value, str)
    decoded: dict[str, Any] = json.loads(value)
    return decoded


async def render_code(box: Sandbox, code: str, on_progress: Any = None) -> RenderResult:
    return await box.render(box.new_render_id(), "spreadsheet", "code", code, "t",
                            on_progress or (lambda _p, _m: None))


@pytest.fixture(scope="module")
async def box(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(tmp_path_factory.mktemp("box") / "sandbox", CODE_LIMITS, SPEC_LIMITS, code=True)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


@pytest.fixture(scope="module")
async def probe(box: Sandbox, pg: EmbeddedPostgres) -> dict[str, Any]:
    """One job's view of the world (run once: every test below reads its part)."""
    listener = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    # In a checkout (an editable install) the box lends services/docjobs and services/renderer, the
    # packages it runs: nothing else of services/ or of the checkout is there.
    paths = [str(p) for p in (ROOT / "pyproject.toml", ROOT / "Makefile", ROOT / "tests", ROOT / "deploy",
                              ROOT / ".git", ROOT / ".docjobs", ROOT / "services" / "jobstore",
                              ROOT / "services" / "gateway", ROOT / "services" / "renderer" / ".." / "jobstore",
                              box.base_dir, box.out_dir, pg.log_path, pg.base_dir, Path("/home"),
                              Path("/etc/passwd"), Path("/etc/shadow"), Path("/var/lib/docjobs"), Path("/run"),
                              Path("/sys"))]
    try:
        result = await render_code(box, PROBE.replace("PORT", str(port)).replace("PATHS", repr(paths)))
    finally:
        listener.close()
    return report_of(result)


async def test_one_user_cannot_read_another_users_running_job(box: Sandbox) -> None:
    """Attack 1: a child forked from a process holding every job walked sys._getframe() up to that
    process' job table. Here the victim's job runs while the attacker searches its own memory (every
    readable mapping, gc, the frames above it), files and /proc for the victim's secret."""
    secret = f"VICTIM_{uuid.uuid4().hex}"
    victim_code = f"SECRET = {secret!r}\nimport time\ntime.sleep(6)\n" + SAVE_REPORT.replace(
        "json.dumps(report)", "'done'")
    attacker_code = r"""
import gc, json, os, re, sys
pattern = re.compile(rb"VICTIM_[0-9a-f]{32}")
found = set()
own = "VICTIM_" + "0" * 32  # a secret of its own, made as it runs: the search must find this one
def search(data):
    if isinstance(data, str):
        data = data.encode(errors="replace")
    found.update(m.decode() for m in pattern.findall(data))
# Its own memory, all of it: the heap it inherited (and the pages freed there) included.
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(x, 16) for x in fields[0].split("-"))
    if "r" not in fields[1] or end - start > 512 * 1024 * 1024 or fields[-1] in ("[vvar]", "[vsyscall]"):
        continue
    try:
        with open("/proc/self/mem", "rb") as mem:
            mem.seek(start)
            search(mem.read(end - start))
    except (OSError, ValueError, OverflowError):
        pass
# Every object the collector knows, and every frame up from here with its locals and globals.
for obj in gc.get_objects():
    try:
        search(repr(obj)[:100000])
    except Exception:
        pass
frame = sys._getframe()
while frame is not None:
    search(repr(frame.f_locals)[:1000000])
    search(repr(frame.f_globals)[:1000000])
    frame = frame.f_back
# Files it can write or that change (scratch, shared memory, temporary directories) and /proc.
for top in ("/tmp", "/dev/shm", "/var/tmp", "/run", "/proc"):
    for directory, dirs, files in os.walk(top):
        if directory.startswith(("/proc/sys", "/proc/self/task")) or directory.count("/") > 4:
            dirs[:] = []
        for name in files:
            if name in ("kcore", "kmsg", "pagemap", "mem") and directory.startswith("/proc"):
                continue
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    search(f.read(4 * 1024 * 1024))
            except OSError:
                pass
report = {"found": sorted(found), "pids": sorted(p for p in os.listdir("/proc") if p.isdigit())}
""" + SAVE_REPORT
    started = asyncio.Event()
    victim = asyncio.create_task(render_code(box, victim_code, lambda _p, _m: started.set()))
    async with asyncio.timeout(60):
        await started.wait()
    attack = report_of(await render_code(box, attacker_code))
    assert not victim.done(), "the victim must still run while the attacker searches"
    await victim
    assert secret not in attack["found"], attack
    assert attack["found"] == ["VICTIM_" + "0" * 32], attack  # its own only: the search does read memory


def is_code_zygote(process: psutil.Process) -> bool:
    """A code zygote or a box it made; False for a process that ended while we looked (an earlier job's)."""
    try:
        return "renderer.sandbox.codezygote" in process.cmdline() and process.name() != "bwrap"
    except psutil.Error:
        return False


async def test_the_code_zygote_holds_no_job_data(box: Sandbox) -> None:
    """The process every code job is forked from never holds a job: not while a job runs, not after."""
    secret = f"VICTIM_{uuid.uuid4().hex}"
    code = f"SECRET = {secret!r}\nimport time\ntime.sleep(3)\n" + SAVE_REPORT.replace("json.dumps(report)", "SECRET")
    assert box.pid is not None
    in_box = [p for p in psutil.Process(box.pid).children(recursive=True) if is_code_zygote(p)]
    # The code zygote itself, not the boxes it has made (spares waiting for a job have its command line)
    zygotes = [p for p in in_box if p.ppid() not in {q.pid for q in in_box}]
    assert len(zygotes) == 1, in_box
    started = asyncio.Event()
    job = asyncio.create_task(render_code(box, code, lambda _p, _m: started.set()))
    async with asyncio.timeout(60):
        await started.wait()
    during = memory_holds(zygotes[0].pid, secret.encode())
    result = await job
    assert first_cell(result.path) == secret  # the job had it
    assert not during and not memory_holds(zygotes[0].pid, secret.encode())
    # The search reads the zygote's memory indeed: its own configuration (its command line) is found.
    assert memory_holds(zygotes[0].pid, b'"control_fd"')


async def test_nothing_of_one_job_reaches_the_next(box: Sandbox) -> None:
    """Boxes are built ahead of their jobs (a spare per kind, warmed on a document of our own): each is
    used once. What one job leaves in its libraries' modules, in its scratch directory or in its
    process is not there for the next job of the same kind, which finds only what the warm-up could
    not have left: an empty /tmp."""
    secret = f"LEFT_{uuid.uuid4().hex}"
    leaver = f"""
import openpyxl, sys, os
openpyxl.LEFT = {secret!r}
sys.modules["left_behind"] = type(sys)("left_behind")
open("/tmp/left.txt", "w").write({secret!r})
os.environ["LEFT"] = {secret!r}
""" + SAVE_REPORT.replace("json.dumps(report)", "'ok'")
    finder = """
import json, os, sys, openpyxl
report = {"module": getattr(openpyxl, "LEFT", None), "modules": "left_behind" in sys.modules,
          "env": os.environ.get("LEFT"), "tmp": sorted(os.listdir("/tmp"))}
""" + SAVE_REPORT
    for _ in range(3):  # the second and third jobs of this kind run in spares made while another ran
        assert first_cell((await render_code(box, leaver)).path) == "ok"
        found = report_of(await render_code(box, finder))
        # /tmp holds nothing but the directories the runtime is lent from, when it lives under /tmp
        lent = sorted({Path(path).parts[2] for path in runtime_paths() if path.startswith("/tmp/")})
        assert found == {"module": None, "modules": False, "env": None, "tmp": lent}, found


async def test_a_job_runs_in_the_spare_box_built_before_it(box: Sandbox) -> None:
    """After a job of a kind has had its box, the next box of that kind is built and waits (a job's box
    is no longer built while the job waits for it); the next job of that kind is handed that box. Two
    wait after one job: the next job's box and the next output check's."""
    await render_code(box, SAVE_REPORT.replace("json.dumps(report)", "'first'"))
    assert box.pid is not None

    def spares() -> set[int]:
        found = set()
        for process in psutil.Process(box.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # a box that ended since it was listed
                if process.name() == SPARE_NAME:
                    found.add(process.pid)
        return found

    waiting = await wait_until(lambda: found if len(found := spares()) == 2 else None, timeout=30)
    started = asyncio.Event()
    code = "import time\ntime.sleep(2)\n" + SAVE_REPORT.replace("json.dumps(report)", "'second'")
    job = asyncio.create_task(render_code(box, code, lambda _p, _m: started.set()))
    async with asyncio.timeout(60):
        await started.wait()
    running = {pid for pid in waiting if psutil.pid_exists(pid) and psutil.Process(pid).name() == "docjobs job"}
    assert len(running) == 1, (waiting, spares())
    assert first_cell((await job).path) == "second"


# A job that, once its code has run, does not end by itself: the exit its box makes after the job's
# "done" sleeps instead.
NEVER_EXITS = "import os, time\nos._exit = lambda status: time.sleep(600)\n"
# ... and leaves a process of its own running beside it.
LEAVES_A_PROCESS = "if os.fork() == 0:\n    time.sleep(600)\n"


def job_processes(box: Sandbox) -> list[int]:
    assert box.pid is not None
    found = []
    for process in psutil.Process(box.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.name() == "docjobs job" and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
    return found


async def test_a_job_that_said_done_is_ended_and_checked_at_once(box: Sandbox) -> None:
    """Done means "look": the job's box is killed then, and as nothing of it runs any more (its process
    has no other), its document goes to the check without waiting for the box's own exit (which
    unmaps a heap shared with the code zygote and tears its namespaces down). A job that never ends
    by itself timed out before."""
    async with asyncio.timeout(15):
        result = await render_code(box, NEVER_EXITS + SAVE_REPORT.replace("json.dumps(report)", "'ended'"))
    assert first_cell(result.path) == "ended"
    await wait_until(lambda: not job_processes(box))


async def test_a_job_that_leaves_a_process_running_is_checked_once_all_of_it_is_gone(box: Sandbox) -> None:
    """Where the box's process has another beside it, its end is told once the box has been reaped,
    which is when every process of its PID namespace has gone: its document is never checked while
    any of it runs."""
    async with asyncio.timeout(15):
        result = await render_code(box, NEVER_EXITS + LEAVES_A_PROCESS
                                   + SAVE_REPORT.replace("json.dumps(report)", "'all gone'"))
    assert first_cell(result.path) == "all gone"
    assert job_processes(box) == []  # gone before the answer, not after it


async def test_a_traced_code_job_says_how_long_its_phases_took(tmp_path: Path) -> None:
    """bench/render.py times a code job's phases inside the zygote (robust to a loaded machine, where
    the figures end to end move with the load)."""
    sandbox = Sandbox(tmp_path / "sandbox", CODE_LIMITS, SPEC_LIMITS, code=True, trace=True)
    await sandbox.start()
    try:
        result = await render_code(sandbox, SAVE_REPORT.replace("json.dumps(report)", "'timed'"))
    finally:
        await sandbox.stop()
    assert set(result.phases) == {"handoff", "code", "box end", "to check", "check", "copy out", "total"}
    assert all(ms >= 0 for ms in result.phases.values())
    assert sum(ms for name, ms in result.phases.items() if name != "total") <= result.phases["total"] + 0.01


def memory_holds(pid: int, needle: bytes) -> bool:
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, ValueError, OverflowError):
                continue
    return False


async def test_a_job_sees_only_its_own_processes(probe: dict[str, Any]) -> None:
    """Attack 7: every host process' cmdline was readable (no PID namespace)."""
    assert probe["pids"] == [1], probe["pids"]  # the job itself, PID 1 of its namespace
    assert not [c for c in probe["cmdlines"] if "pytest" in c or "worker" in c or "postgres" in c], probe


async def test_a_job_has_no_network(probe: dict[str, Any]) -> None:
    assert probe["interfaces"] == ["lo"]  # and it is down
    assert probe["tcp to the host"] == "Network is unreachable"
    assert probe["tcp out"] == "Network is unreachable"


async def test_project_files_the_data_directory_and_logs_are_not_visible(probe: dict[str, Any]) -> None:
    """Attack 7: the whole host file system was readable (the checkout, the Compose env template, the
    Postgres log quoting other users' rejected payloads)."""
    assert [path for path, seen in probe["visible"].items() if seen] == [], probe["visible"]
    lent = {Path(path).parts[1] for path in runtime_paths()}  # where the interpreter and the venv live
    assert set(probe["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp",
                                  "usr"} | lent, probe["root"]


async def test_new_namespaces_mounts_ptrace_and_kernel_surfaces_are_refused(probe: dict[str, Any]) -> None:
    """Attack 7: unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET) succeeded (full capabilities in a new
    user namespace). Each call is refused inside a job (clone3 says ENOSYS, so the C library falls back to
    clone, whose flags are checked), and the filter is loaded. That each refusal is the filter's own, not
    only the missing capabilities', is tests/test_seccomp.py's part."""
    calls = probe["calls"]
    assert calls.pop("clone3") == "ENOSYS"
    assert calls == dict.fromkeys(calls, "EPERM"), calls
    status = probe["status"]
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000000", status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status


async def test_a_job_is_the_first_the_oom_killer_takes(probe: dict[str, Any]) -> None:
    """When a container's memory runs out, the kernel kills the process of highest score: a job's, never
    the renderer or a zygote that all jobs of the renderer depend on."""
    assert probe["oom_score_adj"] == "1000"


async def test_each_job_has_a_uid_of_its_own(probe: dict[str, Any]) -> None:
    inside, outside, count = (int(x) for x in probe["uid_map"])
    assert probe["uid"] == inside == 1000 and count == 1
    if os.geteuid() == 0:
        assert outside >= 2_000_000_000  # as root: a uid of its own on the host too


async def test_a_job_filling_its_scratch_space_fails_only_itself(box: Sandbox) -> None:
    """Attack 4: one job writing 512 MB filled a tmpfs every job shared: other users' jobs failed
    with ENOSPC. Each job has a tmpfs of its own (48 MB here): the one that fills it fails, alone."""
    filler = ("import time\ntry:\n    with open('fill.bin', 'wb') as f:\n        while True:\n"
              "            f.write(b'x' * 2**20)\n            f.flush()\n"
              "except OSError:\n    time.sleep(5)  # holding its full scratch space\n    raise\n")
    started = asyncio.Event()
    filling = asyncio.create_task(render_code(box, "import time\ntime.sleep(1)\n" + filler,
                                              lambda _p, _m: started.set()))
    async with asyncio.timeout(60):
        await started.wait()
    # This one writes while the other fills its space (each needs 40 of its 48 MB).
    neighbour = "import time\ntime.sleep(1.5)\nopen('data.bin', 'wb').write(b'y' * 40 * 2**20)\n" + \
        SAVE_REPORT.replace("json.dumps(report)", "str(len(open('data.bin', 'rb').read()))")
    result = await render_code(box, neighbour)
    assert first_cell(result.path) == str(40 * 2**20)
    with pytest.raises(RenderError, match="No space left on device") as failed:
        await filling
    assert not failed.value.given_back


# --- where the box cannot be built, and as an ordinary user ----------------------------------------------

NONROOT_RUN = """
import asyncio, json, sys
from pathlib import Path
import openpyxl
from renderer.sandbox.client import Sandbox

async def main():
    box = Sandbox(Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), code=True)
    await box.start()
    try:
        result = await box.render(box.new_render_id(), "spreadsheet", "code", sys.argv[4], "t", lambda _p, _m: None)
        report = openpyxl.load_workbook(result.path).active["A1"].value
    finally:
        await box.stop()
    print(json.dumps({"isolation": box.isolation, "report": json.loads(report)}))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("unshare") is None,
                    reason="needs root to become nobody (setpriv, unshare)")
def test_code_jobs_are_isolated_the_same_as_an_ordinary_user(open_directory: Path) -> None:
    """The non-root path: the renderer's user (nobody here) builds the box in user namespaces only."""
    paths = [str(ROOT / "pyproject.toml"), str(open_directory)]
    code = PROBE.replace("PORT", "9").replace("PATHS", repr(paths))
    result = subprocess.run(as_nobody([sys.executable, "-c", NONROOT_RUN, str(open_directory / "sandbox"),
                                       json.dumps(CODE_LIMITS), json.dumps(SPEC_LIMITS), code]),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert "user namespace" in outcome["isolation"]["code"], outcome["isolation"]
    report = outcome["report"]
    assert report["pids"] == [1] and report["interfaces"] == ["lo"]
    assert report["tcp out"] == "Network is unreachable"
    assert not any(report["visible"].values()), report["visible"]
    calls = report["calls"]
    assert calls.pop("clone3") == "ENOSYS" and calls == dict.fromkeys(calls, "EPERM"), calls
    assert report["status"]["CapEff"] == "0000000000000000" and report["status"]["Seccomp"] == "2"
    assert report["uid_map"] == ["1000", "0", "1"]  # 0 of the box's user namespace: nobody outside


# Denies new user namespaces as a container runtime's default seccomp profile does, then runs the rest.
NO_USERNS = """
import errno, os, sys, pyseccomp
rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare")
rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, 0x10000000, 0x10000000))
rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
rules.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop privileges")
@pytest.mark.parametrize("where", ["root without CAP_SYS_ADMIN", "an ordinary user without user namespaces"])
def test_a_renderer_that_cannot_isolate_code_refuses_to_start(where: str, open_directory: Path) -> None:
    """Attack 8: without namespaces code ran with rlimits only. Now the renderer refuses to start, in
    one line, with the status that tells `docjobs up` not to restart it."""
    renderer = [sys.executable, "-m", "renderer.worker"]
    if where.startswith("root"):
        command = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", *renderer]
    else:
        command = as_nobody([sys.executable, "-c", NO_USERNS, *renderer])
    env = {"PATH": os.environ["PATH"], "DOCJOBS_CODE_EXECUTION": "sandbox", "DOCJOBS_DATA_DIR": str(open_directory),
           "DOCJOBS_JOBSTORE_ADDRESS": "127.0.0.1:9", "DOCJOBS_RENDER_CONCURRENCY": "1",
               "DOCJOBS_GRPC_TOKEN": "t" * 32}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_DO_NOT_RESTART, result.stderr[-3000:]
    reasons = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(reasons) == 1 and "code jobs cannot be isolated here" in reasons[0], result.stderr[-3000:]
    assert re.search(r"CAP_SYS_ADMIN|namespace|bwrap|bubblewrap", reasons[0]), reasons[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="the uids of a root renderer's block are what runs out")
def test_a_root_renderer_asked_for_more_code_jobs_than_its_uids_refuses_to_start(open_directory: Path) -> None:
    """As root each code job takes two uids of the renderer's block (its box, its output check's box):
    with more jobs at once than fit, every job past them was refused at run time, a fault that is not
    theirs. The renderer says so at start instead, in one line, and is not restarted."""
    too_many = MAX_JOBS_AS_ROOT + 1
    env = {"PATH": os.environ["PATH"], "DOCJOBS_CODE_EXECUTION": "sandbox", "DOCJOBS_DATA_DIR": str(open_directory),
           "DOCJOBS_JOBSTORE_ADDRESS": "127.0.0.1:9", "DOCJOBS_RENDER_CONCURRENCY": str(too_many),
           "DOCJOBS_GRPC_TOKEN": "t" * 32}
    result = subprocess.run([sys.executable, "-m", "renderer.worker"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == EXIT_DO_NOT_RESTART, result.stderr[-3000:]
    reasons = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(reasons) == 1 and f"DOCJOBS_RENDER_CONCURRENCY={too_many}" in reasons[0], result.stderr[-3000:]
