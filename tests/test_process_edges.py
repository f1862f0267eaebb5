"""Issue 13's edges: a signal to `serve` stops everything it started, the suite's stacks leave no process behind and
use a Redis of their own, the CLI never creates a database by accident, /docs works offline."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.embedded import WorkerChild
from app.settings import Settings
from tests.processes import descendants, leftovers, live_processes, proc_stat, wait_empty
from tests.stack import BIN, Stack


def wait_for_tree(pid: int, size: int, groups: int = 1, timeout_s: float = 60) -> dict[int, int]:
    """pid -> pgid of ``pid``'s descendants, once there are at least ``size`` of them in ``groups`` groups."""
    deadline = time.monotonic() + timeout_s
    while len(tree := descendants(pid)) < size or len(set(tree.values())) < groups:
        assert time.monotonic() < deadline, f"process {pid} started only {tree}"
        time.sleep(0.2)
    return tree


def assert_gone(tree: dict[int, int], timeout_s: float = 5) -> None:
    """No process of ``tree`` and none of its groups is alive (SIGKILL takes a moment to land)."""
    assert not wait_empty(set(tree.values()), timeout_s), tree
    assert not set(tree) & set(live_processes()), tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_serve_stops_its_worker_and_all_it_started(sig, tmp_path):
    """docker stop and systemd send SIGTERM, a terminal Ctrl+C: either way no worker is left running."""
    stack = Stack("embedded", tmp_path)
    try:
        serve = stack.start().procs[0]
        tree = wait_for_tree(serve.pid, 2)  # the worker and its pool process
        os.kill(serve.pid, sig)  # serve alone, as docker stop does
        assert serve.wait(timeout=30) == 0, stack.logs()  # a graceful stop, not killed by the signal
        assert_gone(tree)
    finally:
        stack.stop()


def test_a_worker_child_that_ignores_sigterm_is_killed_with_what_it_started(tmp_path):
    worker = WorkerChild(Settings(data_dir=tmp_path))
    worker.argv = ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"]  # its children inherit the ignored SIGTERM
    worker.start()
    tree = wait_for_tree(worker.proc.pid, 2)
    started = time.monotonic()
    worker.stop(timeout_s=1)
    assert time.monotonic() - started < 10
    assert_gone(tree)


def test_stack_stop_leaves_no_process_of_any_group_it_started(tmp_path):
    """A leader that exits on SIGTERM, a child of its group that ignores it, a descendant that leads a group of
    its own (as serve's worker does) and is never told to stop: none survives."""
    stack = Stack("embedded", tmp_path)
    script = "(trap '' TERM; exec sleep 300) & setsid sleep 300 & exec sleep 300"
    stack.procs.append(subprocess.Popen(["sh", "-c", script], start_new_session=True))
    tree = wait_for_tree(stack.procs[0].pid, 2, groups=2)  # the leader's group and the one setsid made
    stack.stop(timeout_s=1)
    assert_gone(tree | {stack.procs[0].pid: stack.procs[0].pid})


def test_the_safety_net_finds_what_left_the_runners_session():
    escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
    in_session = subprocess.Popen(["sleep", "300"])
    try:
        left = leftovers()
        assert escaped.pid in left and "sleep 300" in left[escaped.pid]
        assert os.getpgrp() not in left  # a library's process pool in the runner's session dies with it
    finally:
        for proc in (escaped, in_session):
            proc.kill()
            proc.wait()


def test_the_redis_tests_use_a_server_of_their_own(redis_url):
    import redis

    if os.environ.get("POISONSCAN_TEST_REDIS_URL"):
        pytest.skip("POISONSCAN_TEST_REDIS_URL names the Redis to use")
    pid = redis.Redis.from_url(redis_url).info("server")["process_id"]
    assert proc_stat(pid)[1] == os.getpid()  # started by this run, not the machine's shared Redis


def cli(cwd: Path, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("POISONSCAN_DATA_DIR", "POISONSCAN_DATABASE_URL")}
    if data_dir:
        env["POISONSCAN_DATA_DIR"] = str(data_dir)
    return subprocess.run([BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and line.startswith("error: "), line
    for word in words:
        assert word in line


def test_keys_commands_never_create_a_database(tmp_path):
    for args in (["keys", "list"], ["keys", "create", "x"], ["keys", "revoke", "psk_x"]):
        assert_one_line_error(cli(tmp_path, *args), str(tmp_path / "poisonscan-data"), "poisonscan migrate", "POISONSCAN_DATA_DIR")
    assert list(tmp_path.iterdir()) == []


def test_keys_commands_on_a_database_that_is_not_migrated(tmp_path):
    (tmp_path / "poisonscan-data").mkdir()
    (tmp_path / "poisonscan-data" / "poisonscan.db").touch()
    assert_one_line_error(cli(tmp_path, "keys", "list"), "poisonscan migrate", "no such table")


def test_migrate_creates_the_data_folder(tmp_path):
    data = tmp_path / "new" / "data"
    for args in (["migrate"], ["keys", "create", "ci"]):
        result = cli(tmp_path, *args, data_dir=data)
        assert result.returncode == 0, result.stderr
    assert "ci" in cli(tmp_path, "keys", "list", data_dir=data).stdout


def test_docs_load_nothing_from_the_network(tmp_path):
    """Passes once create_app calls app.docs.install_docs (built with docs_url=None, redoc_url=None)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    client = TestClient(create_app(Settings(data_dir=tmp_path / "data")))
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"https?://", page.text), "the docs page loads something from the network"
    assets = re.findall(r'(?:src|href)="(/docs-static/[^"]+)"', page.text)
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    assert sorted(Path(a).suffix for a in assets) == sorted(kinds)
    for asset in assets:
        resp = client.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 1000, asset
        assert kinds[Path(asset).suffix] in resp.headers["content-type"], asset
    assert client.get("/redoc").status_code == 404  # its page would load ReDoc from a CDN
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")
