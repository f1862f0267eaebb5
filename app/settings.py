"""Configuration, read once from environment variables (prefix ``POISONSCAN_``).

With nothing set, poisonscan runs on the embedded default: SQLite and kombu's
``filesystem://`` transport, all state in one data folder. Production sets
``POISONSCAN_DATABASE_URL=postgresql+psycopg://...`` and
``POISONSCAN_BROKER_URL=redis://...``.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POISONSCAN_", extra="ignore")

    data_dir: Path = Field(default=Path("./poisonscan-data"), description="All local state: database, broker, artifacts.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in the data folder.")
    broker_url: str | None = Field(default=None, description="Celery broker URL; default: filesystem transport in the data folder.")

    max_upload_bytes: int = Field(default=8 * 1024**3, description="Uploads above this are refused with 413 while streaming.")
    allow_anonymous: bool = Field(default=False, description="Accept requests without an API key (tenant 'anonymous').")
    auth_cache_ttl_s: float = Field(default=5.0, description="How long an API process trusts a key it has checked; a revocation elsewhere takes at most this long.")

    tenant_detector_config: dict[str, dict[str, dict]] = Field(
        default_factory=dict, description="Per-tenant defaults for detector_config, as JSON: {tenant: {detector: {setting: "
        "value}}}; a scan's own detector_config wins, and allow-lists (e.g. unsafe_serialization.allow_globals) are joined.")

    max_active_scans_per_tenant: int = Field(default=100, ge=1, description="Queued plus running scans one tenant may "
                                             "have; more get 429 with Retry-After.")
    auth_failures_per_minute: int = Field(default=30, ge=1, description="Failed authentications one client address "
                                          "may make per minute in one API process; more get 429 with Retry-After.")
    poll_cache_ttl_s: float = Field(default=1.0, ge=0, le=30, description="How long an API process answers polls of one "
                                    "scan from memory (a running scan's progress is at most this old; 0 turns it off).")
    api_db_pool_size: int = Field(default=30, description="Database connections each API process keeps open.")
    api_db_timeout_s: float = Field(default=5.0, gt=0, description="The API's bound on connecting to the database, "
                                    "waiting for a pooled connection or a lock; past it a request gets 503 + Retry-After.")
    api_statement_timeout_s: float = Field(default=15.0, gt=0, description="PostgreSQL statement_timeout of the API's connections.")
    broker_timeout_s: float = Field(default=3.0, gt=0, description="The API's bound on publishing a scan to the broker; "
                                    "past it the scan stays queued and the reaper sends it once the broker is back.")
    readiness_timeout_s: float = Field(default=1.5, gt=0, le=10, description="/readyz reports a dependency down when "
                                       "its check takes longer than this.")

    # Worker behaviour.
    task_soft_time_limit_s: int = 3600
    task_hard_time_limit_s: int = 3900
    worker_max_tasks_per_child: int = 50
    # Reaper: a running scan with no progress for running_timeout_s is re-queued, or failed once it
    # has been started max_attempts times; a queued one is re-sent every queued_timeout_s (its
    # message may be lost), and failed once it has waited queued_max_wait_s for a worker.
    queued_timeout_s: int = 600
    queued_max_wait_s: int = 86400
    running_timeout_s: int = 900
    max_attempts: int = 3
    reaper_interval_s: int = 30
    reaper_in_api: bool = Field(default=True, description="Run the reaper in each API process (a thread on its own "
                                "schedule); false where `poisonscan reap --every N` runs it instead.")
    # Webhooks (app/webhooks): sent by a dispatcher thread in each worker process, never by the scan itself.
    public_url: str | None = Field(default=None, description="The API's external base URL (e.g. https://scan.example.com):"
                                   " links in webhook events are absolute when it is set, else relative paths.")
    webhooks_in_worker: bool = Field(default=True, description="Run the webhook dispatcher in each worker process; false "
                                     "where `poisonscan webhooks dispatch` runs it instead.")
    webhook_allow_private: bool = Field(default=False, description="Allow webhook URLs that resolve to loopback, "
                                        "private, link-local or other non-public addresses (refused by default: SSRF).")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60, description="Bound on one delivery attempt (connect, "
                                     "send and the receiver's answer).")
    webhook_retry_window_s: int = Field(default=86400, ge=1, description="A delivery is retried for this long after its "
                                        "event, then marked failed.")
    webhook_backoff_base_s: float = Field(default=5.0, gt=0, description="Wait before the first retry; each later "
                                          "wait doubles, up to webhook_backoff_max_s (with ±20% jitter).")
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    webhook_poll_s: float = Field(default=0.25, gt=0, le=60, description="How often the dispatcher looks for due deliveries.")
    max_webhooks_per_tenant: int = Field(default=20, ge=1)
    # Worker metrics (prometheus_client's multiprocess mode: one file per worker process, summed when read).
    metrics_dir: Path | None = Field(default=None, description="Folder of the worker processes' metric files; default "
                                     "<data_dir>/metrics. The API's /metrics includes them when it shares the folder "
                                     "(the embedded default); each worker can also serve them on worker_metrics_port.")
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Serve this worker's metrics "
                                            "(scan and detector durations) at http://<host>:<port>/metrics.")
    # Seconds the pipeline sleeps after each stage; only for tests and demos that must catch a scan mid-flight.
    stage_delay_s: float = 0.0

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_metrics_dir(self) -> Path:
        return (self.metrics_dir or self.resolved_data_dir / "metrics").expanduser().resolve()

    @property
    def artifacts_dir(self) -> Path:
        return self.resolved_data_dir / "artifacts"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'poisonscan.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.celery_broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return self.resolved_data_dir / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
