"""Exports of a scan report (the dict ``worker.pipeline.build_report`` returns) into formats other tools read:
SARIF 2.1.0 (``sarif.to_sarif``) and a CycloneDX 1.6 ML-BOM (``cyclonedx.to_cyclonedx``). Pure functions of the
report: no detector, TensorFlow or database import, so the API and the CLI can both render a stored report.

Shared vocabulary (documented once, used by both):

* rule id: ``<detector>/<kind>``, where ``kind`` is :func:`title_kind` of the finding's title: the title without
  its leading role ("model", "dataset", ...) and ``file <member>:`` prefix, without the evidence values the
  artifact named (member paths, globals) and parenthesised detail, lowercased, cut to its first four words that
  start with a letter and hold only letters, digits and ``-``, joined with ``-``. E.g.
  ``unsafe_serialization/pickle-imports-and-calls``, ``artifact_integrity/sha-256-verified``. Artifact-controlled text never reaches a rule id.
* the finding's artifact: the input named by ``evidence.role`` (else the title's leading role word, else the only
  scanned input); its archive/folder member is ``evidence.file`` when that differs from the input's filename.
"""

import re
from importlib import metadata

from worker.findings import ATTACHMENT_ROLES, SCANNED_ROLES

TOOL_NAME = "poisonscan"
ATLAS_URI = "https://atlas.mitre.org/techniques/{}"

_ROLES = SCANNED_ROLES + ATTACHMENT_ROLES
_WORD = re.compile(r"[a-z][a-z0-9-]*")
# evidence keys whose values the artifact chose (member paths, imported globals): cut out of the title's kind
_NAMED_BY_ARTIFACT = ("file", "filename", "global", "location", "model_path", "signature_path", "name")


def tool_version() -> str:
    try:
        return metadata.version(TOOL_NAME)
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "0.0.0"


def findings(report: dict) -> list[dict]:
    """Every finding, in report order, with its detector's name (older reports may lack ``detector``)."""
    return [f | {"detector": f.get("detector") or d["name"]} for d in report.get("detectors", []) for f in d["findings"]]


def title_kind(finding: dict) -> str:
    title = str(finding.get("title", ""))
    ev = finding.get("evidence") or {}
    head, _, rest = title.partition(" ")
    if head in _ROLES:
        title = rest
    if ev.get("file") and title.startswith(f"file {ev['file']}: "):
        title = title[len(f"file {ev['file']}: "):]
    for key in _NAMED_BY_ARTIFACT:
        if isinstance(ev.get(key), str) and ev[key]:
            title = title.replace(ev[key], " ")
    title = re.sub(r"\([^)]*\)", " ", title).lower()  # "(one method)", "(2 members)": detail, not kind
    words = [w for w in title.split() if _WORD.fullmatch(w)]
    return "-".join(words[:4]).strip("-") or "finding"


def rule_id(finding: dict) -> str:
    return f"{finding['detector']}/{title_kind(finding)}"


# CWE per rule: (detector, a word of the kind or None for any, CWE); first match wins, only for findings that are
# problems (an info finding such as "serialization scanned" is not a weakness). Data poisoning/backdoors have no CWE.
_CWES = (
    ("unsafe_serialization", "template", "CWE-1336"),
    ("model_structure", "template", "CWE-1336"),
    ("unsafe_serialization", "executable", "CWE-94"),
    ("model_structure", "executable", "CWE-94"),
    ("unsafe_serialization", "link", "CWE-59"),
    ("model_structure", "link", "CWE-59"),
    ("unsafe_serialization", None, "CWE-502"),
    ("artifact_integrity", None, "CWE-354"),
    ("signature_verification", None, "CWE-347"),
)


def cwe(finding: dict) -> str | None:
    if finding.get("severity") == "info":
        return None
    words = title_kind(finding).split("-")
    for detector, word, cwe_id in _CWES:
        if finding["detector"] == detector and (word is None or word in words):
            return cwe_id
    return None


def artifact_of(report: dict, finding: dict) -> tuple[dict | None, str | None]:
    """(the input the finding is about, the member inside it or None)."""
    inputs = report.get("inputs", [])
    ev = finding.get("evidence") or {}
    role = ev.get("role") or (str(finding.get("title", "")).partition(" ")[0])
    item = next((i for i in inputs if i.get("role") == role), None)
    if item is None:
        scanned = [i for i in inputs if i.get("role") in ("model", "dataset")]
        item = scanned[0] if len(scanned) == 1 else None
    member = ev.get("file")
    if item is None or not isinstance(member, str) or member in ("", item.get("filename")):
        member = None
    return item, member
