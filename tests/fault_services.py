"""Services and probes for the fault test (tests/test_faults.py): a PostgreSQL cluster and a Redis server that the
test starts itself on free ports (never the machine's shared 5432/6379), the production shape on them (the API and
Celery workers as processes of their own), a prober that measures the API's latency while faults are injected, and
a watcher that follows every scan's row straight from PostgreSQL.

Everything started here leads a process group of its own and is stopped by ``close()``, whatever happened."""

import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import pytest

from tests.processes import stop_groups
from tests.stack import free_port, wait_until_ready

BIN = str(Path(sys.executable).with_name("poisonscan"))
SERVICES_HINT = "install them with scripts/ensure-services.sh (./run test runs it)"


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------------- PostgreSQL

def postgres_bindir() -> Path:
    """Debian's PostgreSQL binaries (the newest major version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if not found or not (found[-1].parent / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; {SERVICES_HINT}")
    return found[-1].parent


class PostgresServer:
    """A throwaway cluster in a folder of its own, owned by user postgres (the server refuses to run as root)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="poisonscan-faults-pg-"))  # not under pytest's root-only tmp dir
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.fail("runuser is missing: PostgreSQL cannot be started as root without it")
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"there is no user 'postgres' to run PostgreSQL as; {SERVICES_HINT}")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.as_user = [runuser, "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [*self.as_user, *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n"
                                 f"--- server log\n{_tail(self.log)}")

    def init(self) -> "PostgresServer":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        return self

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "start", "-w", "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "stop", "-m", mode, "-w", "-t", "60")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """Stop it whatever state it is in, then remove the cluster."""
        pid = self._postmaster_pid()
        if pid is not None:
            try:
                self.stop("immediate")
            except (AssertionError, subprocess.TimeoutExpired):
                pass
            try:  # pg_ctl makes the postmaster a session (so a group) leader; its children share the group
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)


# -------------------------------------------------------------------------------------------------------- Redis

class RedisServer:
    """redis-server without persistence: a restart loses every queue, as a crashed broker without AOF does."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail(f"redis-server is not installed; {SERVICES_HINT}")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs: list[subprocess.Popen] = []

    @property
    def proc(self) -> subprocess.Popen:
        return self.procs[-1]

    def start(self, timeout_s: float = 20) -> None:
        import redis

        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)]
        with open(self.folder / f"redis-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:  # the server answering must be this one, not one that took the port first
                if redis.Redis.from_url(self.url, socket_timeout=1).info("server")["process_id"] == proc.pid:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not come up:\n{_tail(self.folder / f'redis-{len(self.procs) - 1}.log')}")

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped server cannot act on SIGTERM
                except ProcessLookupError:
                    pass
        stop_groups({p.pid for p in self.procs if p.poll() is None}, set(), timeout_s=10)
        for proc in self.procs:
            proc.wait()


# ------------------------------------------------------------------------------------- the production shape

class ProductionStack:
    """`poisonscan api` (uvicorn) and `poisonscan worker --queues cpu` processes on the given database and broker."""

    def __init__(self, folder: Path, database_url: str, broker_url: str, **settings) -> None:
        self.dir = folder
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "POISONSCAN_DATA_DIR": str(folder / "data"), "POISONSCAN_DATABASE_URL": database_url,
                    "POISONSCAN_BROKER_URL": broker_url, "POISONSCAN_LOG_LEVEL": "INFO"}
        self.env |= {f"POISONSCAN_{k.upper()}": str(v) for k, v in settings.items()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.api_key = ""  # set by the caller, who owns the database

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen([BIN, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_api(self, timeout_s: float = 60) -> None:
        proc = self._spawn("api", "api", "--port", str(self.port))
        if not wait_until_ready(self.base_url, timeout_s, alive=lambda: proc.poll() is None):
            raise AssertionError(f"the API did not become ready:\n{self.logs()}")

    def start_worker(self, name: str) -> subprocess.Popen:
        return self._spawn(name, "worker", "--queues", "cpu", "--concurrency", "1")

    def wait_worker_ready(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                break
            if b" ready." in self.log_path(name).read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker {name} did not become ready:\n{self.logs()}")

    def kill(self, name: str) -> None:
        """SIGKILL the process and its group (a Celery worker with its pool child)."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p, chars)}" for p in sorted(self.dir.glob("*.log")))

    def close(self) -> None:
        alive = {p.pid for p in self.procs.values() if p.poll() is None}
        stop_groups(alive, set(), timeout_s=15)
        for proc in self.procs.values():
            proc.wait()


# ---------------------------------------------------------------------------------------------------- probes

@dataclass
class Sample:
    t: float  # time.monotonic() when the request was sent
    kind: str  # "healthz" or "scan"
    latency_s: float
    status: str  # HTTP status, or the exception's name (a timeout, a refused connection)
    retry_after: str | None = None


class LatencyProbe:
    """GET /healthz and GET /v1/scans/{id} every ``interval_s``, each in a thread of its own (a slow scan poll never
    delays a health check), recording every answer's latency and status."""

    def __init__(self, base_url: str, api_key: str, interval_s: float = 0.1, timeout_s: float = 20) -> None:
        self.base_url, self.api_key, self.interval_s, self.timeout_s = base_url, api_key, interval_s, timeout_s
        self.samples: list[Sample] = []
        self.scan_ids: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(kind,), name=f"probe-{kind}", daemon=True)
                         for kind in ("healthz", "scan")]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)

    def _loop(self, kind: str) -> None:
        headers = {"X-API-Key": self.api_key}
        i = 0
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                if kind == "healthz":
                    path = "/healthz"
                elif self.scan_ids:
                    path = f"/v1/scans/{self.scan_ids[-1 - i % min(len(self.scan_ids), 4)]}"  # the newest scans
                    i += 1
                else:
                    self._stop.wait(self.interval_s)
                    continue
                start = time.monotonic()
                try:
                    resp = client.get(path)
                    status, retry_after = str(resp.status_code), resp.headers.get("retry-after")
                except httpx.HTTPError as exc:
                    status, retry_after = type(exc).__name__, None
                latency = time.monotonic() - start
                self.samples.append(Sample(start, kind, latency, status, retry_after))
                self._stop.wait(max(0.0, self.interval_s - latency))

    def window(self, kind: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind and start <= s.t <= end]


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def codes(samples: list[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(s.status for s in samples).items()))


class ScanWatcher:
    """Reads (status, stage, percent, attempts) of every scan straight from PostgreSQL every ``interval_s`` and notes
    when each one last changed: the evidence for "progressed again" (the API cannot be asked while the database is
    down, and a heartbeat alone is not progress)."""

    def __init__(self, conninfo: str, interval_s: float = 0.2) -> None:
        self.conninfo, self.interval_s = conninfo, interval_s
        self.state: dict[str, tuple] = {}
        self.changes: list[tuple[float, str, tuple | None, tuple]] = []  # (t, scan id, before, after)
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scan-watcher", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        import psycopg

        conn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                rows = conn.execute("SELECT id::text, status, stage, percent, attempts FROM scans").fetchall()
                now = time.monotonic()
                with self._lock:
                    for sid, *values in rows:
                        values = tuple(values)
                        if self.state.get(sid) != values:
                            self.changes.append((now, sid, self.state.get(sid), values))
                            self.state[sid] = values
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval_s)
        if conn is not None:
            conn.close()

    def snapshot(self) -> dict[str, tuple]:
        with self._lock:
            return dict(self.state)

    def unfinished(self, ids: list[str]) -> list[str]:
        state = self.snapshot()
        return [i for i in ids if state.get(i, ("queued",))[0] not in ("succeeded", "failed", "canceled")]

    def count(self, status: str) -> int:
        return sum(1 for v in self.snapshot().values() if v[0] == status)

    def first_change_after(self, sid: str, t: float) -> float | None:
        with self._lock:
            return next((when for when, i, _, _ in self.changes if i == sid and when > t), None)


@dataclass
class Phase:
    """One fault: when it was injected and lifted, and when every scan moved again and finished."""

    name: str
    started: float = 0.0  # fault injected (for the baseline: its scans submitted)
    lifted: float = 0.0  # fault over (process back, broker resumed, database up)
    progressed: float | None = None  # every scan unfinished when the fault was lifted has changed since
    drained: float | None = None  # every scan submitted so far is finished
    notes: dict = field(default_factory=dict)
