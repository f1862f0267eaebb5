"""A scan report as a CycloneDX 1.6 ML-BOM: one component per scanned artifact (``machine-learning-model`` for the
model, ``data`` for the dataset) with its SHA-256, detected kind and signature status as ``poisonscan:*``
properties, and every finding above ``info`` as a vulnerability affecting that component (rated from its severity,
sourced from its MITRE ATLAS technique). Built with cyclonedx-python-lib, which escapes every string it writes."""

import uuid

from worker.findings import ATLAS_TECHNIQUES
from worker.report_formats import ATLAS_URI, TOOL_NAME, artifact_of, cwe, findings, rule_id, tool_version

COMPONENT_TYPE = {"model": "machine-learning-model", "dataset": "data"}


def to_cyclonedx_json(report: dict) -> str:
    from cyclonedx.model.bom import Bom
    from cyclonedx.output.json import JsonV1Dot6

    bom = Bom(serial_number=_serial(report))
    bom.metadata.tools.components.add(_tool())
    bom.metadata.properties.update(_props({"verdict": report.get("verdict"), "verdict_reason": report.get("verdict_reason"),
                                           "scan_id": report.get("scan_id")}))
    items = findings(report)
    refs = {}
    for item in report.get("inputs", []):
        if item.get("role") in COMPONENT_TYPE:
            component = _component(item, [f for f in items if artifact_of(report, f)[0] is item])
            bom.components.add(component)
            refs[item["role"]] = component.bom_ref
    for n, f in enumerate(items):
        item, member = artifact_of(report, f)
        if f["severity"] != "info" and item is not None and item.get("role") in refs:
            bom.vulnerabilities.add(_vulnerability(n, f, refs[item["role"]], member))
    return JsonV1Dot6(bom).output_as_string(indent=2)


def _serial(report: dict):
    try:  # the scan's id makes the serial stable across downloads of the same report
        return uuid.UUID(str(report.get("scan_id")))
    except ValueError:
        return uuid.uuid4()


def _tool():
    from cyclonedx.model.component import Component, ComponentType

    return Component(type=ComponentType.APPLICATION, name=TOOL_NAME, version=tool_version())


def _props(values: dict) -> list:
    from cyclonedx.model import Property

    return [Property(name=f"poisonscan:{k}", value=str(v)) for k, v in values.items() if v not in (None, "")]


def _component(item: dict, about: list[dict]):
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.component import Component, ComponentType

    props = {"role": item["role"], "kind": item.get("kind"), "size": item.get("size"),
             "expected_sha256": item.get("expected_sha256")}
    signature = [f for f in about if f["detector"] == "signature_verification"]
    if item["role"] == "model":  # absent means the signature detector did not run
        props["signature:status"] = signature[0]["title"] if signature else "not checked"
        props["signature:severity"] = signature[0]["severity"] if signature else None
    props["findings"] = sum(f["severity"] != "info" for f in about)
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=item["sha256"])] if item.get("sha256") else []
    return Component(type=ComponentType(COMPONENT_TYPE[item["role"]]), name=item.get("filename") or item.get("sha256") or item["role"],
                     bom_ref=f"{item['role']}:{item.get('sha256')}", hashes=hashes, properties=_props(props))


def _vulnerability(n: int, f: dict, ref, member: str | None):
    from cyclonedx.model.vulnerability import (BomTarget, Vulnerability, VulnerabilityRating, VulnerabilityScoreSource,
                                               VulnerabilitySeverity, VulnerabilitySource)

    technique = f.get("technique") or ""
    source = VulnerabilitySource(name=f"MITRE ATLAS {technique} {ATLAS_TECHNIQUES.get(technique, '')}".strip(),
                                 url=_xs_uri(ATLAS_URI.format(technique))) if technique else None
    rating = VulnerabilityRating(severity=VulnerabilitySeverity(f["severity"]), method=VulnerabilityScoreSource.OTHER,
                                 justification=f"poisonscan {f['detector']} severity")
    cwes = [int(c.split("-")[1])] if (c := cwe(f)) else None
    props = {"rule": rule_id(f), "detector": f["detector"], "score": f.get("score"), "member": member}
    return Vulnerability(bom_ref=f"finding-{n}", id=f"{TOOL_NAME}:{rule_id(f)}", source=source, ratings=[rating],
                         cwes=cwes, description=f["title"], detail=f.get("explanation") or None,
                         recommendation=f.get("remediation") or None, affects=[BomTarget(ref=str(ref))],
                         properties=_props(props))


def _xs_uri(uri: str):
    from cyclonedx.model import XsUri

    return XsUri(uri)
