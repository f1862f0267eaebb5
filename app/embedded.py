"""The embedded default: one command, one machine, one data folder.

``poisonscan serve`` migrates the SQLite database, creates a first API key if there is none,
starts a Celery worker child on the filesystem transport (restarted if it dies) and serves the API.
"""

import logging
import os
import signal
import subprocess
import sys
import threading

from sqlalchemy import func, select

from app.settings import Settings

log = logging.getLogger("poisonscan.embedded")


def worker_argv(settings: Settings, queues: str, concurrency: int, beat: bool) -> list[str]:
    unknown = {q.strip() for q in queues.split(",")} - {"cpu", "gpu"}
    if unknown:
        raise SystemExit(f"error: unknown queue(s) {sorted(unknown)}; poisonscan has queues cpu and gpu")
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, "-c", str(concurrency), "-l", "INFO", "-n", f"poisonscan-{queues.replace(',', '-')}@%h"]
    if settings.uses_filesystem_broker:
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]  # no fanout on the filesystem transport
    if beat:
        argv += ["-B", "-s", str(settings.resolved_data_dir / "celerybeat-schedule")]
    return argv


def ensure_first_key(settings: Settings) -> str | None:
    """Create and return a key when the database has none yet, so a fresh install is usable."""
    from app.auth import create_key
    from app.db import get_sessionmaker
    from app.models import ApiKey

    with get_sessionmaker()() as session:
        if session.scalar(select(func.count()).select_from(ApiKey)):
            return None
        _, plaintext = create_key(session, "default")
        return plaintext


class WorkerChild:
    """Runs the worker as a child process and restarts it if it dies (a crash must not stall scans)."""

    def __init__(self, settings: Settings) -> None:
        self.argv = worker_argv(settings, "cpu,gpu", 1, beat=True)
        self.env = {**os.environ, "POISONSCAN_DATA_DIR": str(settings.resolved_data_dir)}
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        log.info("worker child started (pid %s)", self.proc.pid)

    def _supervise(self) -> None:
        while not self._stopping.wait(2.0):
            if self.proc and self.proc.poll() is not None:
                log.warning("worker child exited with %s; restarting it", self.proc.returncode)
                self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the running scan's message stays unacked
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def serve(settings: Settings, host: str, port: int, start_worker: bool = True) -> int:
    import uvicorn

    from app.main import create_app
    from app.migrate import upgrade

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    key = ensure_first_key(settings)
    if key:
        print(f"\nFirst API key (shown once; send it as X-API-Key):\n  {key}\n", flush=True)
    worker = WorkerChild(settings) if start_worker else None
    if worker:
        worker.start()
    print(f"poisonscan serving on http://{host}:{port} (data in {settings.resolved_data_dir})", flush=True)
    try:
        uvicorn.run(create_app(settings), host=host, port=port)
    finally:
        if worker:
            worker.stop()
    return 0
