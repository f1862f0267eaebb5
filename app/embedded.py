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


def worker_argv(settings: Settings, queues: str, concurrency: int) -> list[str]:
    unknown = {q.strip() for q in queues.split(",")} - {"cpu", "gpu"}
    if unknown:
        raise SystemExit(f"error: unknown queue(s) {sorted(unknown)}; poisonscan has queues cpu and gpu")
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, "-c", str(concurrency), "-l", "INFO", "-n", f"poisonscan-{queues.replace(',', '-')}@%h"]
    if settings.uses_filesystem_broker:
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]  # no fanout on the filesystem transport
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
    """Runs the worker as a child process and restarts it if it dies (a crash must not stall scans).

    The child leads a process group of its own, so that stopping it reaches what it started (Celery's pool
    processes, the inspection sandbox) and a terminal's Ctrl+C reaches only ``serve``, which stops it.
    """

    def __init__(self, settings: Settings) -> None:
        self.argv = worker_argv(settings, "cpu,gpu", 1)
        self.env = {**os.environ, "POISONSCAN_DATA_DIR": str(settings.resolved_data_dir)}
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        log.info("worker child started (pid %s)", self.proc.pid)

    def _supervise(self) -> None:
        while not self._stopping.wait(2.0):
            if self.proc and self.proc.poll() is not None:
                log.warning("worker child exited with %s; restarting it", self.proc.returncode)
                _kill_group(self.proc.pid)  # what the dead worker started must not run beside its successor
                self._spawn()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Celery's warm shutdown, then SIGKILL for the whole group: nothing it started outlives ``serve``."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()  # no restart can race with the shutdown
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the running scan's message stays unacked
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker child still running after %.0f s; killing its process group", timeout_s)
        _kill_group(self.proc.pid)  # also a pool or sandbox process that outlived the worker
        self.proc.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already empty
        pass


def serve(settings: Settings, host: str, port: int, start_worker: bool = True) -> int:
    from app.serving import run_api

    from app.main import create_app
    from app.migrate import upgrade

    # SIGTERM (docker stop, systemd) ends serve as Ctrl+C does, through the `finally` that stops the worker:
    # uvicorn shuts down gracefully on either and then raises the signal again, and SIGTERM's default action
    # would end the process there, leaving the worker running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    key = ensure_first_key(settings)
    if key:
        print(f"\nFirst API key (shown once; send it as X-API-Key):\n  {key}\n", flush=True)
    worker = WorkerChild(settings) if start_worker else None
    try:
        if worker:
            worker.start()
        print(f"poisonscan serving on http://{host}:{port} (data in {settings.resolved_data_dir})", flush=True)
        run_api(create_app(settings), host, port)
    finally:
        if worker:
            _stop_uninterrupted(worker)
    return 0


def _stop_uninterrupted(worker: WorkerChild) -> None:
    """A second Ctrl+C or SIGTERM must not abort the worker's shutdown halfway (stop() is bounded by its timeout)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    worker.stop()
