"""What detectors return: findings with a severity, a score and evidence."""

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path

class InputRejected(ValueError):
    """An input cannot be scanned at all (e.g. a dataset with NaNs or one class): the scan fails with this
    message instead of finishing with a detector error."""


class NotApplicable(Exception):
    """This detector has nothing to look at in these inputs (e.g. label checks on unlabelled instruction data): it is
    reported as skipped with the reason, neither an error nor a pass of its checks."""


ATLAS_TECHNIQUES = {
    "AML.T0010": "ML Supply Chain Compromise",
    "AML.T0018": "Backdoor ML Model",
    "AML.T0020": "Poison Training Data",
}


class Severity(enum.StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass
class Finding:
    title: str
    severity: Severity
    score: float  # 0..1, how strongly the evidence supports the title
    explanation: str
    remediation: str = ""
    evidence: dict = field(default_factory=dict)
    technique: str | None = None  # defaults to the detector's technique

    def to_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = str(self.severity)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        return cls(d["title"], Severity(d["severity"]), float(d["score"]), d["explanation"], d.get("remediation", ""),
                   d.get("evidence") or {}, d.get("technique"))


@dataclass(frozen=True)
class InputFile:
    """One artifact handed to a scan: where its bytes are and what the caller claims about them."""

    role: str  # "model" | "dataset"
    path: Path
    sha256: str  # the content address the bytes were stored under
    filename: str | None = None
    kind: str | None = None
    expected_sha256: str | None = None  # what the caller says the bytes must hash to


SCANNED_ROLES = ("model", "dataset")
# evidence and aids, not scanned themselves: a signature over the model, and for the model layer a labelled clean
# held-out set (trigger probing, reconstruction, re-testing) and a suspected trigger to probe
ATTACHMENT_ROLES = ("signature", "public_key", "certificate_chain", "holdout", "trigger")


@dataclass(frozen=True)
class ScanInputs:
    model: InputFile | None = None
    dataset: InputFile | None = None
    signature: InputFile | None = None  # OpenSSF model-signing bundle over the model
    public_key: InputFile | None = None  # PEM public key the signature must verify with
    certificate_chain: InputFile | None = None  # PEM CA certificate(s) for certificate-based signatures
    holdout: InputFile | None = None  # labelled clean inputs the model was not trained on (same format as the dataset)
    trigger: InputFile | None = None  # .npz with "pattern" and "mask": a trigger the user suspects

    @property
    def files(self) -> list[InputFile]:
        """The artifacts being scanned (model, dataset)."""
        return [f for f in (self.model, self.dataset) if f is not None]

    @property
    def all_files(self) -> list[InputFile]:
        return self.files + [f for f in (getattr(self, r) for r in ATTACHMENT_ROLES) if f is not None]

    @property
    def roles(self) -> set[str]:
        return {f.role for f in self.files}


def evidence_confidence(item: dict) -> float:
    """The poisoning confidence of one ``evidence.flagged`` item; an item without one is certain evidence (1.0).
    The quarantine (``worker.pipeline.sample_lists``) and remediation (``ScanContext.quarantine``) read it alike."""
    return float(item.get("confidence", 1.0))
