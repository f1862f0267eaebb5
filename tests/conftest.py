"""Fixtures for both configurations: embedded (SQLite + filesystem broker) and production
(PostgreSQL + Redis). The services are real; if one is down the tests fail and say how to start it
(``./run test`` starts them)."""

import os
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

PG_ADMIN_URL = os.environ.get("POISONSCAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("POISONSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
CONFIGS = ["embedded", "postgres"]
SERVICES_HINT = "start the services with scripts/ensure-services.sh (./run test does it)"


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
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); {SERVICES_HINT}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


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
