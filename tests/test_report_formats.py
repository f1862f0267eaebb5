"""SARIF 2.1.0 and CycloneDX 1.6 exports of a real report: valid against their schemas, one result/vulnerability
per finding, artifacts with their SHA-256, hostile filenames kept as data; the CLI and API serve them."""

import json
import uuid
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from fastapi.testclient import TestClient

from tests.datasets_util import blobs
from tests.payloads import global_call
from worker.local import scan_local_files
from worker.options import ScanOptions
from worker.report_formats import findings, rule_id
from worker.report_formats.cyclonedx import to_cyclonedx_json
from worker.report_formats.sarif import to_sarif

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
DETECTORS = ["format_identification", "unsafe_serialization", "artifact_integrity", "signature_verification"]
# on disk a name cannot hold "/", so "</script>" goes in through the report (as an API upload's filename would)
HOSTILE = 'evil "q"\n<b>é\u202e.pkl'
HOSTILE_API = 'x"\n</script>é.pkl'
UPLOAD_NAME = '</script> "q" é.pkl'  # the API refuses control characters in a name (422)


def files(tmp_path: Path, model_name: str = "model.pkl") -> dict[str, Path]:
    model = tmp_path / model_name
    model.write_bytes(global_call("os", "system", "touch /nonexistent/never"))  # never loaded: scanned statically
    x, y = blobs()
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    return {"model": model, "dataset": tmp_path / "d.npz"}


@pytest.fixture
def report(tmp_path):
    return scan_local_files(files(tmp_path, HOSTILE), ScanOptions(detectors=DETECTORS))


def validate_sarif(log: dict) -> None:
    jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(log)


def validate_bom(text: str) -> None:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None


def test_sarif_is_valid_with_a_result_per_finding(report):
    log = to_sarif(report)
    validate_sarif(log)
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "poisonscan" and run["tool"]["driver"]["version"]
    assert run["properties"]["verdict"] == report["verdict"] == "fail"
    assert len(run["results"]) == len(findings(report))
    levels = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
    rules = run["tool"]["driver"]["rules"]
    for f, result in zip(findings(report), run["results"]):
        assert result["level"] == levels[f["severity"]] and result["ruleId"] == rule_id(f)
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert f["title"] in result["message"]["text"]
    (pickle,) = [r for r in run["results"] if r["level"] == "error"]
    rule = rules[pickle["ruleIndex"]]
    assert rule["id"] == "unsafe_serialization/pickle-imports-and-calls"
    assert {"AML.T0010", "CWE-502"} <= set(rule["properties"]["tags"]) and rule["properties"]["atlas-technique"] == "AML.T0010"
    model = next(i for i, a in enumerate(report["inputs"]) if a["role"] == "model")
    location = pickle["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["index"] == model and run["artifacts"][model]["hashes"]["sha-256"] == report["inputs"][model]["sha256"]
    assert run["artifacts"][model]["properties"]["filename"] == HOSTILE  # the name survives as data


def test_sarif_relates_rules_to_atlas_and_cwe_and_fingerprints_results(report):
    run = to_sarif(report)["runs"][0]
    taxonomies = {t["name"]: {taxon["id"] for taxon in t["taxa"]} for t in run["taxonomies"]}
    assert "AML.T0010" in taxonomies["MITRE ATLAS"] and "502" in taxonomies["CWE"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    related = {(rel["target"]["toolComponent"]["name"], rel["target"]["id"])
               for rel in rules["unsafe_serialization/pickle-imports-and-calls"]["relationships"]}
    assert related == {("MITRE ATLAS", "AML.T0010"), ("CWE", "502")}
    for rule in rules.values():  # every relationship points at a taxon that is listed
        for rel in rule["relationships"]:
            assert rel["target"]["id"] in taxonomies[rel["target"]["toolComponent"]["name"]]
    prints = [r["partialFingerprints"]["poisonscan/v1"] for r in run["results"]]
    assert len(set(prints)) == len(prints)  # one alert per finding
    again = to_sarif(json.loads(json.dumps(report)) | {"scan_id": "another-scan"})["runs"][0]
    assert [r["partialFingerprints"]["poisonscan/v1"] for r in again["results"]] == prints  # stable across scans


def test_data_findings_carry_no_cwe(report):
    unsigned = [r for r in to_sarif(report)["runs"][0]["tool"]["driver"]["rules"] if r["id"].startswith("signature_verification/")]
    assert unsigned and all("CWE-347" in r["properties"]["tags"] for r in unsigned)
    poisoned = {"title": "label poisoning toward class 3", "severity": "high", "score": 0.9, "explanation": "",
                "evidence": {}, "technique": "AML.T0020", "detector": "data_poisoning", "layer": "data"}
    report["detectors"].append({"name": "data_poisoning", "layer": "data", "technique": "AML.T0020", "status": "ok",
                                "error": None, "findings": [poisoned], "duration_s": 0.0})
    log = to_sarif(report)
    validate_sarif(log)
    (rule,) = [r for r in log["runs"][0]["tool"]["driver"]["rules"] if r["id"].startswith("data_poisoning/")]
    assert not [t for t in rule["properties"]["tags"] if t.startswith("CWE")] and "cwe" not in rule["properties"]


def test_a_member_finding_names_the_member(report):
    finding = next(f for f in findings(report) if f["severity"] == "critical")
    finding["evidence"]["file"] = "archive/data.pkl"  # as the scan of a zip member reports it
    report["detectors"] = [{"name": finding["detector"], "layer": "supply_chain", "technique": "AML.T0010",
                            "status": "ok", "error": None, "findings": [finding], "duration_s": 0.0}]
    (result,) = to_sarif(report)["runs"][0]["results"]
    (logical,) = result["locations"][0]["logicalLocations"]
    assert logical["name"] == "archive/data.pkl" and logical["fullyQualifiedName"] == f"{HOSTILE}!/archive/data.pkl"


def test_bom_lists_each_artifact_with_its_hash_and_findings(report):
    text = to_cyclonedx_json(report)
    validate_bom(text)
    bom = json.loads(text)
    by_name = {c["name"]: c for c in bom["components"]}
    for item in report["inputs"]:
        component = by_name[item["filename"]]
        assert component["hashes"] == [{"alg": "SHA-256", "content": item["sha256"]}]
        assert component["type"] == {"model": "machine-learning-model", "dataset": "data"}[item["role"]]
    props = {p["name"]: p["value"] for p in by_name[HOSTILE]["properties"]}
    assert props["poisonscan:kind"] == "pickle" and props["poisonscan:signature:status"] == "model is unsigned"
    problems = [f for f in findings(report) if f["severity"] != "info"]
    assert len(bom["vulnerabilities"]) == len(problems)
    critical = next(v for v in bom["vulnerabilities"] if v["ratings"][0]["severity"] == "critical")
    assert critical["cwes"] == [502] and "AML.T0010" in critical["source"]["name"]
    assert critical["affects"] == [{"ref": by_name[HOSTILE]["bom-ref"]}]


def test_hostile_filename_survives_as_data(report):
    report["inputs"][0]["filename"] = HOSTILE_API
    log = json.dumps(to_sarif(report))
    validate_sarif(json.loads(log))
    assert json.loads(log)["runs"][0]["artifacts"][0]["properties"]["filename"] == HOSTILE_API
    text = to_cyclonedx_json(report)
    validate_bom(text)
    assert HOSTILE_API in {c["name"] for c in json.loads(text)["components"]}


def test_cli_formats(tmp_path, capsys):
    from app.cli import main

    paths = files(tmp_path)
    args = ["scan", "--model", str(paths["model"]), "--dataset", str(paths["dataset"]), "--detectors", ",".join(DETECTORS)]
    assert main(args + ["--format", "sarif"]) == 1
    validate_sarif(json.loads(capsys.readouterr().out))
    assert main(args + ["--format", "cyclonedx"]) == 1
    validate_bom(capsys.readouterr().out)


def test_api_serves_exports_after_success(tmp_path, request):
    from app.main import create_app
    from tests.conftest import make_settings
    from worker.jobs import execute_scan

    settings = make_settings("embedded", tmp_path, request)
    paths = files(tmp_path)
    with TestClient(create_app(settings)) as api:
        h = {"X-API-Key": _key(api)}
        up = {role: api.post("/v1/artifacts", content=p.read_bytes(), headers=h | {"content-type": "application/octet-stream"},
                             params={"filename": UPLOAD_NAME if role == "model" else p.name}).json() for role, p in paths.items()}
        name = up["model"]["filename"]  # as stored (the API keeps the part after the last "/")
        assert name == UPLOAD_NAME.rsplit("/", 1)[1] and "é" in name
        scan = api.post("/v1/scans", json={r: u["sha256"] for r, u in up.items()} | {"options": {"detectors": DETECTORS}}, headers=h).json()
        for path in ("report.sarif", "bom.json"):
            assert api.get(f"/v1/scans/{scan['id']}/{path}", headers=h).status_code == 409
        assert execute_scan(uuid.UUID(scan["id"]), api.app.state.sessionmaker, settings) == "succeeded"
        sarif = api.get(scan["links"]["sarif"], headers=h)
        assert sarif.status_code == 200 and sarif.headers["content-type"].startswith("application/sarif+json")
        validate_sarif(sarif.json())
        assert sarif.json()["runs"][0]["artifacts"][0]["properties"]["filename"] in (name, "d.npz")
        bom = api.get(scan["links"]["bom"], headers=h)
        assert bom.status_code == 200 and bom.headers["content-type"].startswith("application/vnd.cyclonedx+json")
        validate_bom(bom.text)
        assert name in {c["name"] for c in bom.json()["components"]}
        other = {"X-API-Key": _key(api, "other")}
        assert api.get(scan["links"]["sarif"], headers=other).status_code == 404  # tenant-scoped


def _key(api, tenant: str = "fmt") -> str:
    from app.auth import create_key

    with api.app.state.sessionmaker() as session:
        return create_key(session, tenant, tenant)[1]
