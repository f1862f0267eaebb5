"""What every format inspector shares: finding constructors with bounded evidence, and the one
fail-closed helper (``not_inspected``) for whatever could not be opened, parsed or bounded."""

import re
from dataclasses import dataclass

from worker.findings import Finding, Severity

MAX_JSON_BYTES = 100 * 1024 * 1024  # refuse JSON headers/configs larger than this
MAX_ZIP_MEMBERS = 10_000
MAX_CONFIG_NODES = 2_000_000  # dicts/lists/values visited in one Keras config
MAX_CONFIG_DEPTH = 512
MAX_LISTED = 50  # items listed in one finding's evidence
MAX_HDF5_OBJECTS = 100_000
MAX_ONNX_BYTES = 2 * 1024 * 1024 * 1024  # protobuf's own limit
MAX_ONNX_NODES = 5_000_000
MAX_EMBEDDED_H5_BYTES = 512 * 1024 * 1024  # inspect model.weights.h5 inside a .keras up to this size

_SCORE = {Severity.critical: 1.0, Severity.high: 0.9, Severity.medium: 0.6, Severity.low: 0.3, Severity.info: 0.0}


def _finding(title: str, severity: Severity, explanation: str, remediation: str = "", evidence: dict | None = None,
             score: float | None = None) -> Finding:
    return Finding(title=title, severity=severity, score=_SCORE[severity] if score is None else score,
                   explanation=explanation, remediation=remediation, evidence=evidence or {})


def _capped(items: list, limit: int = MAX_LISTED) -> dict:
    return {"items": items[:limit], "total": len(items), "truncated": len(items) > limit}


def _short(value, limit: int = 200) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


_DO_NOT_LOAD = "Do not load this file. Obtain the model again from a trusted publisher and compare its hash with theirs."



# References that leave the model: a URL scheme, or an absolute Windows path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]{1,15}://|^file:", re.ASCII)
_WIN_ABS = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def not_inspected(what: str, reason: str, location: str = "", evidence: dict | None = None) -> Finding:
    """The gate fails closed: what could not be read is treated as unsafe (``high``), with the reason."""
    return _finding(
        f"{what}: not inspected, treated as unsafe", Severity.high,
        f"{reason} poisonscan cannot vouch for bytes it could not read, so this counts as unsafe.",
        _DO_NOT_LOAD + " If the file is genuine, re-export it in a plain format (safetensors, an uncompressed zip) and scan again.",
        (evidence or {}) | ({"location": location} if location else {}))


def _json_pairs_with_duplicates(duplicates: list):
    def hook(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen
    return hook


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")




@dataclass
class Problem:
    """Something an archive or stream walk could not do or found odd, before it becomes a finding."""

    severity: str  # "high" | "medium"
    title: str
    location: str
    detail: str
