"""The scan pipeline: run the detectors that apply, isolate failures, decide, write the report.

Plain Python over files and arrays: the CLI, the Celery task and the benchmarks all call
``run_pipeline``. Progress goes to a callback; raising from the callback (e.g. the scan was
canceled) stops the pipeline.
"""

import logging
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from worker.catalog import default_registry
from worker.context import ScanContext
from worker.findings import ATLAS_TECHNIQUES, InputRejected, NotApplicable, ScanInputs, Severity, evidence_confidence
from worker.options import ScanOptions
from worker.outputs import OutputSink
from worker.policy import decide
from worker.registry import Registry

REPORT_SCHEMA_VERSION = "1.0"


class PipelineStopped(Exception):
    """Raised by a progress callback to stop the scan (canceled): never recorded as a detector failure."""

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]


def _no_progress(stage: str, percent: float) -> None:
    pass


def run_pipeline(
    inputs: ScanInputs,
    options: ScanOptions,
    *,
    scan_id: str | None = None,
    progress: Progress = _no_progress,
    registry: Registry | None = None,
    stage_delay_s: float = 0.0,
    output_dir: Path | None = None,
) -> dict:
    """``output_dir``: where detectors write the files they produce (a new temporary folder when None); the report's
    ``outputs`` lists them with their paths."""
    registry = registry or default_registry()
    specs = registry.select(inputs.roles, options.detectors)
    sink = OutputSink(output_dir or Path(tempfile.gettempdir()) / f"poisonscan-outputs-{uuid.uuid4().hex}")  # made on first write
    # what one detector computes and a later one reuses (dataset, model, ...)
    context = ScanContext(inputs, sink, quarantine_min_confidence=options.quarantine_min_confidence)
    results = []
    share = 99.0 / max(len(specs), 1)  # detectors share 0-99%; the verdict is the last step
    for i, spec in enumerate(specs):
        if spec.layer != "supply_chain" and options.stop_at_critical and (why := _critical_on_model(results)):
            results += [_skipped(s, why) for s in specs[i:]]
            break
        stage = f"{spec.layer}:{spec.name}"
        progress(stage, share * i)
        sub = (lambda sub_stage, fraction, stage=stage, base=share * i: progress(f"{stage}:{sub_stage}", base + share * min(max(fraction, 0.0), 1.0)))
        extras = {"progress": sub} if spec.reports_progress else {}
        if spec.takes_context:
            extras["context"] = context.for_detector(spec.name, spec.uses)
        results.append(_run_detector(spec, inputs, options.detector_config.get(spec.name, {}), extras))
        context.record_findings(results[-1]["findings"])
        if stage_delay_s:
            time.sleep(stage_delay_s)
    progress("verdict", 99.0)
    report = build_report(scan_id, inputs, options, results, sink.entries)
    ds = context.loaded_dataset()
    wanted = report["quarantine"] or context.cleaned_dataset_requested()
    if wanted and ds is not None:
        report["cleaned_dataset"] = write_cleaned_dataset(sink, ds, [e["index"] for e in report["quarantine"]])
    write_figures(sink, ds, context.model_layer_run(), report)
    report["outputs"] = sink.entries
    return report


def write_figures(sink: OutputSink, ds, run, report: dict) -> None:
    """``figures.npz``: what the HTML report draws that the JSON report does not hold (``worker.figures``), when the
    scan loaded the dataset."""
    from worker.figures import FIGURES_NAME, figures_npz

    data = figures_npz(ds, None if run is None else run.projection, report)
    if data is not None:
        sink.add(FIGURES_NAME, data, media_type="application/octet-stream",
                 description="plot data for the HTML report: activation projections, spectral scores, thumbnails of "
                 "the most suspicious samples")


def write_cleaned_dataset(sink: OutputSink, ds, quarantined: list[int]) -> str:
    """The dataset without exactly the report's quarantine (not the review list), as ``cleaned-dataset.npz``: x, y
    (the original label values) and index (the kept rows' positions in the upload). Ready to train on or scan again.
    A text dataset's are its texts, as ``cleaned-dataset.jsonl``."""
    import numpy as np

    from worker.outputs import npz_bytes

    keep = np.setdiff1d(np.arange(len(ds.y)), quarantined)
    if getattr(ds, "texts", None) is not None:
        return _write_cleaned_texts(sink, ds, keep, len(quarantined))
    labels = np.asarray(ds.classes, dtype=object if any(isinstance(c, str) for c in ds.classes) else None)[ds.y]
    if labels.dtype == object:  # .npz without pickles: strings as a fixed-width unicode array
        labels = labels.astype(str)
    return sink.add("cleaned-dataset.npz", npz_bytes(x=ds.x[keep], y=labels[keep], index=keep.astype(np.int64)),
                    media_type="application/octet-stream",
                    description=f"the dataset without the {len(quarantined)} quarantined samples (x, y, index)")


def _write_cleaned_texts(sink: OutputSink, ds, keep, removed: int) -> str:
    """One JSON object per kept row: index (its position among the loaded rows), text, label; response for
    instruction data."""
    import json

    lines = []
    for i in keep.tolist():
        row = {"index": i, "text": ds.texts[i], "label": ds.classes[int(ds.y[i])]}
        if ds.responses is not None:
            row["response"] = ds.responses[i]
        lines.append(json.dumps(row, ensure_ascii=False))
    return sink.add("cleaned-dataset.jsonl", ("\n".join(lines) + "\n").encode(), media_type="application/jsonl",
                    description=f"the texts without the {removed} quarantined samples (index, text, label)")


def _critical_on_model(results: list[dict]) -> str | None:
    """Why the scan stops early: a critical supply-chain finding on the model (or on a file inside it)."""
    for r in results:
        for f in r["findings"]:
            if r["layer"] == "supply_chain" and f["severity"] == "critical" and f.get("evidence", {}).get("role", "model") == "model":
                return f"the supply-chain layer found a critical problem in the model ({f['title']}); stop_at_critical=true"
    return None


def _skipped(spec, why: str) -> dict:
    return {"name": spec.name, "layer": spec.layer, "technique": spec.technique, "status": "skipped", "error": None,
            "skipped_because": why, "findings": [], "duration_s": 0.0}


def _run_detector(spec, inputs: ScanInputs, config: dict, extras: dict) -> dict:
    started = time.perf_counter()
    entry = {"name": spec.name, "layer": spec.layer, "technique": spec.technique, "status": "ok", "error": None, "findings": []}
    try:
        findings = spec.detect(inputs, config, **extras)
        entry["findings"] = [_finding_record(spec, f) for f in findings]
    except (PipelineStopped, InputRejected):
        raise
    except NotApplicable as exc:  # it looked (and took this long) to find nothing of its kind
        return _skipped(spec, str(exc)) | {"duration_s": round(time.perf_counter() - started, 6)}
    except Exception as exc:  # one broken detector must not sink the scan: record it, go on
        log.exception("detector %s failed", spec.name)
        entry["status"] = "error"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=5)
    entry["duration_s"] = round(time.perf_counter() - started, 6)
    return entry


def _finding_record(spec, finding) -> dict:
    record = finding.to_dict()
    record["technique"] = finding.technique or spec.technique
    record["technique_name"] = ATLAS_TECHNIQUES.get(record["technique"], "")
    record["detector"] = spec.name
    record["layer"] = spec.layer
    return record


def build_report(scan_id: str | None, inputs: ScanInputs, options: ScanOptions, results: list[dict],
                 outputs: list[dict] | None = None) -> dict:
    findings = [f for r in results for f in r["findings"]]
    errors = sum(r["status"] == "error" for r in results)
    supply_chain_errors = sum(r["status"] == "error" and r["layer"] == "supply_chain" for r in results)
    quarantine, review = sample_lists(findings, options.quarantine_min_confidence)
    verdict, reason = decide(options.policy, [Severity(f["severity"]) for f in findings], errors, supply_chain_errors)
    by_severity: dict[str, int] = {}
    for f in findings:
        by_severity[f["severity"]] = by_severity.get(f["severity"], 0) + 1
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "scan_id": scan_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "inputs": [
            {"role": f.role, "filename": f.filename, "sha256": f.sha256, "expected_sha256": f.expected_sha256, "kind": f.kind, "size": f.path.stat().st_size}
            for f in inputs.all_files
        ],
        "policy": options.policy.model_dump(mode="json"),
        "verdict": verdict,
        "verdict_reason": reason,
        "summary": {"findings_by_severity": by_severity, "detectors_run": sum(r["status"] != "skipped" for r in results),
                    "detectors_failed": errors, "detectors_skipped": sum(r["status"] == "skipped" for r in results)},
        "atlas": {t: ATLAS_TECHNIQUES[t] for t in sorted({f["technique"] for f in findings}) if t in ATLAS_TECHNIQUES},
        "files": files_summary(results, options),
        "quarantine": quarantine,
        "quarantine_min_confidence": options.quarantine_min_confidence,
        "review": review,
        "outputs": outputs or [],
        "detectors": results,
    }


def files_summary(results: list[dict], options: ScanOptions) -> list[dict]:
    """One entry per file the supply-chain layer inspected (every file of a folder or bundle): its kind, its worst
    finding and the verdict it alone would get, so a gate can say which file failed."""
    files: dict[tuple, dict] = {}
    for r in results:
        for f in r["findings"]:
            ev = f["evidence"]
            if r["name"] == "unsafe_serialization" and "files" in ev:  # the inventory: every file, clean ones too
                for item in ev["files"]:
                    name = item["file"] or ev.get("file") or ""
                    files.setdefault((ev["role"], name), {"role": ev["role"], "file": name, "kind": item["kind"], "severities": []})
    for r in results:
        for f in r["findings"]:
            key = (f["evidence"].get("role"), f["evidence"].get("file"))
            if r["layer"] == "supply_chain" and key in files and f["severity"] != "info":
                files[key]["severities"].append(Severity(f["severity"]))
    out = []
    for entry in files.values():
        severities = entry.pop("severities")
        worst = max(severities, key=lambda s: s.rank, default=None)
        out.append(entry | {"severity": str(worst) if worst else None, "verdict": decide(options.policy, severities, 0)[0]})
    return out


def sample_lists(findings: list[dict], min_confidence: float) -> tuple[list[dict], list[dict]]:
    """The quarantine and the review list, one entry per dataset sample.

    Quarantine: samples with poisoning evidence (``evidence.flagged`` items, each with a ``confidence``) whose best
    confidence reaches ``min_confidence``; the entry lists every method that agrees, and the data-quality remarks on
    the same sample as corroboration. Review: data-quality remarks (``evidence.review``: outliers, duplicates, label
    noise) and poisoning candidates under the threshold: worth a look, not evidence of an attack on their own."""
    evidence: dict[int, list[dict]] = {}
    remarks: dict[int, list[dict]] = {}
    for f in findings:
        for key, into in (("flagged", evidence), ("review", remarks)):
            for item in f["evidence"].get(key, []):
                into.setdefault(int(item["index"]), []).append({k: v for k, v in item.items() if k != "index"} | {"detector": f["detector"]})
    quarantine, review = [], []
    for i in sorted(set(evidence) | set(remarks)):
        reasons = evidence.get(i, [])
        confidence = max((evidence_confidence(r) for r in reasons), default=0.0)
        if reasons and confidence >= min_confidence:
            quarantine.append({"index": i, "confidence": round(confidence, 4),
                               "attack": sorted({r.get("attack", "poisoning") for r in reasons}),
                               "methods": sorted({r["method"] for r in reasons}), "reasons": reasons,
                               "corroborated_by": remarks.get(i, [])})
        else:
            review.append({"index": i, "reasons": remarks.get(i, []) + reasons,
                           "poisoning_confidence": round(confidence, 4) if reasons else None})
    return quarantine, review
