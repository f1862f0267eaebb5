"""Engine and session factory. The schema comes only from Alembic migrations."""

from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.settings import get_settings


def make_engine(url: str, pool_size: int = 5, timeout_s: float = 30.0, statement_timeout_s: float | None = None) -> Engine:
    """``pool_size``: the API serves sync endpoints from a 40-thread pool and asks for more; workers need few.
    ``timeout_s`` bounds connecting, waiting for a pooled connection and (SQLite) waiting for a lock;
    ``statement_timeout_s`` (PostgreSQL) bounds each statement: a request never waits on the database unbounded."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout_s}, pool_size=pool_size,
                               max_overflow=10, pool_timeout=timeout_s)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # API and worker write concurrently: WAL + busy wait.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args = {"connect_timeout": max(1, int(timeout_s))}
    if statement_timeout_s:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10, pool_timeout=timeout_s,
                         connect_args=connect_args)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.database_url is None:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)
