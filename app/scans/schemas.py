import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.findings import ATTACHMENT_ROLES, SCANNED_ROLES
from worker.options import ScanOptions

ROLES = SCANNED_ROLES + ATTACHMENT_ROLES

SHA256 = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class ScanCreate(BaseModel):
    # A scan needs a model or a dataset (app.scans.service.resolve_inputs refuses neither with 422): documented.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": [role], "properties": {role: {"type": "string"}}} for role in ("model", "dataset")]})

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


# The stored report's parts, as GET /report, /quarantine and /review answer them: documented (OpenAPI), not re-validated
# (a report is returned as the worker stored it). Reports keep their schema_version's shape: only what every report
# has is required, and more keys may come.
class QuarantineItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0, description="The sample's row in the dataset.")
    confidence: float = Field(ge=0, le=1, description="The strongest agreeing method's confidence that it is poisoned.")
    attack: list[str] = Field(default_factory=list, description="What the evidence points to: label_flip, backdoor, ...")
    methods: list[str] = Field(default_factory=list, description="The detection methods that agree.")
    reasons: list[dict] = Field(default_factory=list, description="Every method's evidence, with its detector.")
    corroborated_by: list[dict] = Field(default_factory=list, description="Data-quality remarks on the same sample.")


class ReviewItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0, description="The sample's row in the dataset.")
    reasons: list[dict] = Field(default_factory=list, description="Data-quality remarks and weak poisoning evidence.")
    poisoning_confidence: float | None = Field(default=None, ge=0, le=1, description="Set when a poisoning method "
                                               "flagged the sample under the quarantine's threshold.")


class QuarantineOut(BaseModel):
    scan_id: uuid.UUID
    count: int = Field(ge=0)
    min_confidence: float | None = Field(ge=0, le=1, description="The scan's quarantine_min_confidence.")
    items: list[QuarantineItem]


class ReviewOut(BaseModel):
    scan_id: uuid.UUID
    count: int = Field(ge=0)
    items: list[ReviewItem]


class ReportOut(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"description": "The scan's report (see the README)."})

    schema_version: str
    verdict: Literal["pass", "warn", "fail"]
    scan_id: str | None = None
    generated_at: datetime | None = None
    verdict_reason: str | None = None
    inputs: list[dict] = Field(default_factory=list)
    policy: dict = Field(default_factory=dict)
    summary: dict = Field(default_factory=dict)
    quarantine: list[QuarantineItem] = Field(default_factory=list)
    quarantine_min_confidence: float | None = None
    review: list[ReviewItem] = Field(default_factory=list)
    outputs: list[dict] = Field(default_factory=list, description="Files the scan produced, each downloadable at its "
                                "artifact's /content.")
    detectors: list[dict] = Field(default_factory=list)
