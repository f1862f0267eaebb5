import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from worker.findings import ATTACHMENT_ROLES, SCANNED_ROLES
from worker.options import ScanOptions

ROLES = SCANNED_ROLES + ATTACHMENT_ROLES

SHA256 = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class ScanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id (SHA-256) of the model.")
    dataset: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id (SHA-256) of the dataset.")
    signature: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id of an OpenSSF model-signing bundle over the model.")
    public_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id of the PEM public key the signature must verify with.")
    certificate_chain: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id of the PEM CA certificate(s) for a certificate-based signature.")
    holdout: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id of a labelled clean held-out set (same format as the dataset) for trigger probing, reconstruction and re-testing.")
    trigger: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Artifact id of a suspected trigger: .npz with arrays 'pattern' and 'mask'.")

    def refs(self) -> dict[str, str | None]:
        return {role: getattr(self, role) for role in ROLES}
    options: ScanOptions = Field(default_factory=ScanOptions)


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_progress_at: datetime
    queued_s: float | None = Field(description="Seconds from creation to the (last) start.")
    run_s: float | None = Field(description="Seconds from the (last) start to the end, or to now while running.")


class ScanOut(BaseModel):
    id: uuid.UUID
    status: str
    stage: str | None
    percent: float
    attempts: int
    queue: str
    verdict: str | None
    error: str | None
    inputs: dict
    options: dict
    timings: Timings
    links: dict[str, str]


class ScanPage(BaseModel):
    items: list[ScanOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null on the last page.")
