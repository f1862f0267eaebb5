"""Run poisonscan as real processes: the embedded `serve`, or API + worker on PostgreSQL + Redis."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.processes import descendants, stop_groups

BIN = str(Path(sys.executable).with_name("poisonscan"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(base_url: str, timeout_s: float, alive=lambda: True, path: str = "/readyz") -> bool:
    """Whether ``base_url`` + ``path`` answered 200 within ``timeout_s`` (giving up early once ``alive()`` is false)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{base_url}{path}", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


class Stack:
    def __init__(self, config: str, tmp_path: Path, pg_url: str | None = None, redis_url: str | None = None, **env) -> None:
        self.config, self.dir = config, tmp_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "POISONSCAN_DATA_DIR": str(tmp_path / "data"), "POISONSCAN_LOG_LEVEL": "INFO"}
        if config == "postgres":
            # The run's PostgreSQL database is shared by every test: a reaper in this stack's API would re-send other
            # tests' leftover rows to this stack's workers. Tests that want one pass reaper_in_api=True.
            self.env |= {"POISONSCAN_DATABASE_URL": pg_url, "POISONSCAN_BROKER_URL": redis_url,
                         "POISONSCAN_REAPER_IN_API": "false"}
        self.env |= {f"POISONSCAN_{k.upper()}": str(v) for k, v in env.items()}
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.api_key = ""

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}-{len(self.procs)}.log", "wb")
        # own process group, so a test can kill a worker together with its pool children
        proc = subprocess.Popen([BIN, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True, check=check, timeout=120)

    def start(self, with_worker: bool = True) -> "Stack":
        if self.config == "embedded":
            self._spawn("serve", "serve", "--port", str(self.port), *([] if with_worker else ["--no-worker"]))
            self.api_key = self._wait_for_first_key()
        else:
            self.cli("migrate")
            self.api_key = self.cli("keys", "create", "e2e", "--tenant", f"e2e-{self.port}").stdout.strip().splitlines()[-1]
            self._spawn("api", "api", "--port", str(self.port))
            if with_worker:
                self.start_worker()
        self._wait_ready()
        return self

    def start_worker(self) -> subprocess.Popen:
        proc = self._spawn("worker", "worker", "--queues", "cpu,gpu", "--concurrency", "1")
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def _wait_for_first_key(self, timeout: float = 60) -> str:
        log = self.dir / "serve-0.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(rb"First API key.*?\n\s+(psk_\S+)", log.read_bytes())
            if match:
                return match.group(1).decode()
            time.sleep(0.2)
        raise AssertionError(f"serve printed no first API key:\n{self.logs()}")

    def _wait_ready(self, timeout: float = 60) -> None:
        if not wait_until_ready(self.base_url, timeout):
            raise AssertionError(f"{self.config} stack not ready:\n{self.logs()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": self.api_key}, timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.dir.glob("*.log")))

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every process the stack started together with all they started: serve's worker child leads a
        group of its own, and a worker's pool or sandbox process may outlive the worker."""
        leaders = {proc.pid for proc in self.procs}  # each leads its group (start_new_session)
        groups = {pgid for proc in self.procs for pgid in descendants(proc.pid).values()}
        stop_groups(leaders, groups, timeout_s)
        for proc in self.procs:
            proc.wait()


def wait_for_scan(client: httpx.Client, scan_id: str, until=("succeeded", "failed", "canceled"), timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan = client.get(f"/v1/scans/{scan_id}").json()
        if scan["status"] in until:
            return scan
        time.sleep(0.2)
    raise AssertionError(f"scan {scan_id} still {scan['status']} after {timeout}s: {scan}")
