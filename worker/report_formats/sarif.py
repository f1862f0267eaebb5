"""A scan report as a SARIF 2.1.0 log (code-scanning dashboards, GitHub, Azure DevOps...).

Locations: ``artifactLocation.uri`` is the input's filename, percent-encoded (a relative reference, so any name is a
valid URI), or ``sha256:<hex>`` when it has none, with ``index`` into ``run.artifacts`` (which carries the SHA-256).
A finding about a member of an archive or folder adds a logical location of kind ``member`` whose
``fullyQualifiedName`` is ``<filename>!/<member>`` (the jar-URI convention) and whose ``name`` is the member path.
Message text is the finding's title and explanation as plain text; ``json.dumps`` makes any string safe.

Taxonomies: MITRE ATLAS and CWE are ``run.taxonomies``; each rule relates to its technique and CWE by
``relationships``. ``partialFingerprints["poisonscan/v1"]`` (rule, artifact SHA-256, member, title) is stable across
scans of the same bytes, so dashboards track one alert instead of a new one per scan."""

import hashlib
from urllib.parse import quote

from worker.findings import ATLAS_TECHNIQUES
from worker.report_formats import ATLAS_URI, TOOL_NAME, artifact_of, cwe, findings, rule_id, tool_version

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub code scanning ranks security results by this rule property (0-10)
SECURITY_SEVERITY = {"critical": 9.5, "high": 8.0, "medium": 5.5, "low": 3.0, "info": 0.0}


def to_sarif(report: dict) -> dict:
    items = findings(report)
    artifacts = [_artifact(i) for i in report.get("inputs", [])]
    rules, index = _rules(items)
    run = {
        # no informationUri: the project has no public address yet, and the field is optional
        "tool": {"driver": {"name": TOOL_NAME, "version": tool_version(), "rules": rules,
                            "supportedTaxonomies": [{"name": ATLAS}, {"name": CWE}]}},
        "taxonomies": _taxonomies(rules),
        "invocations": [_invocation(report)],
        "artifacts": artifacts,
        "results": [_result(report, f, index) for f in items],
        "properties": {"verdict": report.get("verdict"), "verdict_reason": report.get("verdict_reason"),
                       "scan_id": report.get("scan_id"), "report_schema_version": report.get("schema_version"),
                       "policy": report.get("policy")},
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


ATLAS, CWE = "MITRE ATLAS", "CWE"


def _taxonomies(rules: list[dict]) -> list[dict]:
    techniques = sorted({r["properties"]["atlas-technique"] for r in rules if r["properties"]["atlas-technique"]})
    cwes = sorted({r["properties"]["cwe"] for r in rules if r["properties"].get("cwe")})
    atlas = {"name": ATLAS, "organization": "MITRE", "informationUri": "https://atlas.mitre.org/",
             "taxa": [{"id": t, "name": ATLAS_TECHNIQUES.get(t, t), "helpUri": ATLAS_URI.format(t)} for t in techniques]}
    cwe_taxonomy = {"name": CWE, "organization": "MITRE", "informationUri": "https://cwe.mitre.org/",
                    "taxa": [{"id": c.removeprefix("CWE-"), "name": c,
                              "helpUri": f"https://cwe.mitre.org/data/definitions/{c.removeprefix('CWE-')}.html"}
                             for c in cwes]}
    for rule in rules:
        targets = [(ATLAS, rule["properties"]["atlas-technique"]), (CWE, rule["properties"].get("cwe", "").removeprefix("CWE-"))]
        rule["relationships"] = [{"target": {"id": taxon, "toolComponent": {"name": component}}, "kinds": ["relevant"]}
                                 for component, taxon in targets if taxon]
    return [atlas, cwe_taxonomy]


def _fingerprint(rid: str, item: dict | None, member: str | None, title: str) -> str:
    key = "\0".join((rid, (item or {}).get("sha256") or "", member or "", title))
    return hashlib.sha256(key.encode()).hexdigest()


def _uri(item: dict) -> str:
    return quote(item["filename"], safe="") if item.get("filename") else f"sha256:{item.get('sha256') or 'unknown'}"


def _artifact(item: dict) -> dict:
    role = "analysisTarget" if item.get("role") in ("model", "dataset") else "attachment"
    out = {"location": {"uri": _uri(item)}, "roles": [role],
           "properties": {"role": item.get("role"), "kind": item.get("kind"), "filename": item.get("filename")}}
    if item.get("sha256"):
        out["hashes"] = {"sha-256": item["sha256"]}
    if isinstance(item.get("size"), int):
        out["length"] = item["size"]
    return out


def _rules(items: list[dict]) -> tuple[list[dict], dict[str, int]]:
    rules: list[dict] = []
    index: dict[str, int] = {}
    for f in items:
        rid = rule_id(f)
        if rid not in index:
            index[rid] = len(rules)
            rules.append(_rule(rid, f))
        rule = rules[index[rid]]  # a rule's severity is its worst result's
        rule["properties"]["security-severity"] = str(max(float(rule["properties"]["security-severity"]),
                                                          SECURITY_SEVERITY.get(f["severity"], 0.0)))
        if (c := cwe(f)) and c not in rule["properties"]["tags"]:
            rule["properties"]["tags"].append(c)
            rule["properties"]["cwe"] = c
    return rules, index


def _rule(rid: str, f: dict) -> dict:
    technique = f.get("technique") or ""
    kind = rid.split("/", 1)[1].replace("-", " ")
    props = {"tags": ["security", technique] if technique else ["security"], "atlas-technique": technique,
             "atlas-technique-name": ATLAS_TECHNIQUES.get(technique, ""), "detector": f["detector"],
             "layer": f.get("layer"), "security-severity": "0.0"}
    rule = {"id": rid, "name": rid.replace("/", "_"), "shortDescription": {"text": f"{f['detector']}: {kind}"},
            "properties": props}
    if technique:
        rule["helpUri"] = ATLAS_URI.format(technique)
    return rule


def _result(report: dict, f: dict, index: dict[str, int]) -> dict:
    rid = rule_id(f)
    text = f"{f['title']}: {f['explanation']}" if f.get("explanation") else f["title"]
    result = {"ruleId": rid, "ruleIndex": index[rid], "level": LEVEL.get(f["severity"], "note"),
              "message": {"text": text},
              "properties": {"severity": f["severity"], "score": f.get("score"), "technique": f.get("technique"),
                             "remediation": f.get("remediation", "")}}
    item, member = artifact_of(report, f)
    result["partialFingerprints"] = {"poisonscan/v1": _fingerprint(rid, item, member, str(f["title"]))}
    if item is not None:
        location = {"physicalLocation": {"artifactLocation": {
            "uri": _uri(item), "index": report["inputs"].index(item)}}}
        if member:
            location["logicalLocations"] = [{"name": member, "kind": "member",
                                             "fullyQualifiedName": f"{item.get('filename') or _uri(item)}!/{member}"}]
        result["locations"] = [location]
    return result


def _invocation(report: dict) -> dict:
    """Detectors that errored are tool notifications: the run did not see everything."""
    failed = [d for d in report.get("detectors", []) if d.get("status") == "error"]
    return {"executionSuccessful": not failed,
            "toolExecutionNotifications": [{"level": "error", "message": {"text": f"{d['name']}: {d.get('error')}"},
                                            "descriptor": {"id": d["name"]}} for d in failed]}
