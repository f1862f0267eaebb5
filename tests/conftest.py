"""Fixtures for both configurations: embedded (SQLite + filesystem broker) and production
(PostgreSQL + Redis). The services are real; if one is down the tests fail and say how to start it
(``./run test`` starts them). The run gets a PostgreSQL database and a Redis server of its own, and no
process it starts outlives it."""

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from app.auth import create_key
from app.db import make_engine
from app.migrate import upgrade
from app.settings import Settings
from tests import processes
from tests.stack import free_port

PG_ADMIN_URL = os.environ.get("POISONSCAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("POISONSCAN_TEST_REDIS_URL")  # default: a server of the run's own
CONFIGS = ["embedded", "postgres"]
SERVICES_HINT = "start the services with scripts/ensure-services.sh (./run test does it)"
os.environ[processes.RUN_MARK] = uuid.uuid4().hex  # inherited by every process the run starts


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite():
    """Safety net: a process group the run started that is still alive at its end is killed, and reported."""
    yield
    left = processes.leftovers()
    processes.signal_groups(set(left), signal.SIGKILL)
    assert not left, f"process groups outlived the tests and were killed now: {left}"


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test run, migrated to head, dropped afterwards."""
    name = f"poisonscan_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc.orig}); {SERVICES_HINT}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis server of this run's own: another user of a shared Redis cannot take the tests' messages."""
    if REDIS_URL:
        yield _flushed(REDIS_URL)
        _flushed(REDIS_URL)
        return
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = _start_redis(folder, port)
    try:
        yield _wait_for_redis(proc, port, folder)
    finally:
        processes.stop_groups({proc.pid}, set(), timeout_s=10)
        proc.wait()


def _flushed(url: str) -> str:
    import redis

    try:
        redis.Redis.from_url(url).flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} (POISONSCAN_TEST_REDIS_URL) is not reachable ({exc})")
    return url


def _start_redis(folder: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed; {SERVICES_HINT}")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with open(folder / "redis.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_redis(proc: subprocess.Popen, port: int, folder: Path, timeout_s: float = 20) -> str:
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:  # the server answering must be ours, not one that took the port first
            if redis.Redis.from_url(url).info("server")["process_id"] == proc.pid:
                return url
        except redis.RedisError:
            pass
        time.sleep(0.1)
    pytest.fail(f"redis-server on port {port} did not come up:\n{(folder / 'redis.log').read_text(errors='replace')[-2000:]}")


def make_settings(config: str, tmp_path: Path, request, **overrides) -> Settings:
    values = {"data_dir": tmp_path / "data", "max_upload_bytes": 1024 * 1024} | overrides
    if config == "postgres":
        values |= {"database_url": request.getfixturevalue("pg_url"), "broker_url": request.getfixturevalue("redis_url")}
    settings = Settings(**values)
    if config == "embedded":
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture(params=CONFIGS)
def settings(request, tmp_path) -> Settings:
    return make_settings(request.param, tmp_path, request)


@pytest.fixture
def sessions(settings):
    engine = make_engine(settings.sqlalchemy_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def tenant_key(sessions):
    """Make an API key for a fresh tenant: tests share the PostgreSQL database, never a tenant."""

    def make(label: str = "t") -> tuple[str, str]:
        tenant = f"{label}-{uuid.uuid4().hex[:8]}"
        with sessions() as session:
            _, key = create_key(session, label, tenant)
        return tenant, key

    return make


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """A file that the test payloads create if anything ever runs them; it must never appear."""
    path = tmp_path_factory.mktemp("canary") / "PWNED"
    yield path
    assert not path.exists(), "a scanned payload was executed"


@pytest.fixture(scope="session")
def digit_victims(tmp_path_factory):
    """Backdoored and clean Keras victims on digits (tests/victims.py), trained once per session."""
    from tests.victims import build_victims

    return build_victims(tmp_path_factory.mktemp("victims"))
