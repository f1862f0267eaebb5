"""Rendering for the CLI: a progress bar on stderr, the report as text or JSON, the exit code."""

import json
import re
import sys
from pathlib import Path

from worker.characters import CONTROLS, INVISIBLE

# C0/C1 controls (tab and newline too), DEL and invisible characters (bidi overrides, zero-width spaces): an artifact's
# name or metadata must not steer the terminal (a member name with escape sequences could print a forged "verdict:
# PASS" line).
_UNSAFE = re.compile(f"[\t\n{CONTROLS}{INVISIBLE}]")


def escape_text(text: str) -> str:
    """``text`` with every control character shown as a visible escape (\\x1b, \\u202e, ...)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)

VERDICT_EXIT = {"pass": 0, "warn": 0, "fail": 1}


def exit_code(verdict: str, fail_on_warn: bool = False) -> int:
    if verdict == "warn" and fail_on_warn:
        return 1
    return VERDICT_EXIT.get(verdict, 2)


class ProgressBar:
    """A one-line bar on stderr; silent when stderr is not a terminal unless forced."""

    def __init__(self, width: int = 30, stream=None) -> None:
        self.width, self.stream = width, stream or sys.stderr
        self._shown = False

    def update(self, stage: str, percent: float) -> None:
        filled = int(self.width * min(max(percent, 0.0), 100.0) / 100)
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {percent:5.1f}% {escape_text(stage)[:40]:40}"
        self.stream.write(line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


def verdict_text(report: dict) -> str:
    return f"verdict: {report['verdict'].upper()} ({report['verdict_reason']})"


def write_html(report: dict, folder: Path) -> Path:
    """The report as ``folder/report.html``, one self-contained page; its pictures are read from the files the scan
    wrote (``outputs[*].path``: the scan's output folder, or where ``submit`` downloaded them)."""
    from worker.report_formats.html import to_html

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.html"
    path.write_text(to_html(report, _local_output), encoding="utf-8")
    return path


def _local_output(entry: dict) -> bytes | None:
    path = Path(entry["path"]) if entry.get("path") else None
    return path.read_bytes() if path is not None and path.is_file() else None


def render(report: dict, fmt: str) -> str:
    """JSON, SARIF and CycloneDX stay exact (JSON escapes controls itself); text escapes every line, since lines carry artifact strings."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    if fmt == "sarif":
        from worker.report_formats.sarif import to_sarif

        return json.dumps(to_sarif(report), indent=2)
    if fmt == "cyclonedx":
        from worker.report_formats.cyclonedx import to_cyclonedx_json

        return to_cyclonedx_json(report)
    return "\n".join(escape_text(line) for line in _text_lines(report))


def _where(evidence: dict) -> str | None:
    """Where in the artifact a finding is: an archive member path, a pickle offset, a file of a folder."""
    if evidence.get("location"):
        return str(evidence["location"])
    occurrences = evidence.get("occurrences") or []
    if occurrences and isinstance(occurrences[0], dict) and occurrences[0].get("location"):
        return f"{occurrences[0]['location']} @ {occurrences[0].get('offset')}"
    return None


def _text_lines(report: dict) -> list[str]:
    lines = [verdict_text(report)]
    for item in report["inputs"]:
        lines.append(f"  {item['role']}: {item.get('filename') or '-'}  {item['kind']}  sha256={item['sha256']}")
    failing = [f for f in report.get("files", []) if f["verdict"] != "pass"]
    if len(report.get("files", [])) > 1:
        lines.append(f"files: {len(report['files'])} inspected, {len(failing)} not clean")
        lines += [f"  [{f['verdict']:>4}] {f['file']} ({f['kind']}, worst {f['severity']})" for f in failing[:50]]
    for det in report["detectors"]:
        status = "" if det["status"] == "ok" else f"  [{det['status']}: {det['error'] or det.get('skipped_because')}]"
        lines.append(f"- {det['layer']}/{det['name']} ({det['technique']}) {det['duration_s']:.3f}s{status}")
        for f in det["findings"]:
            lines.append(f"    [{f['severity']:>8}] {f['title']}")
            if f["severity"] != "info" and (where := _where(f["evidence"])):
                lines.append(f"               at: {where}")
            if f["severity"] not in ("info",) and f.get("remediation"):
                lines.append(f"               fix: {f['remediation']}")
    quarantine, review = report.get("quarantine", []), report.get("review", [])
    if quarantine or review:
        lines.append(f"quarantine: {len(quarantine)} samples with poisoning evidence "
                     f"(confidence >= {report.get('quarantine_min_confidence', 0.5)}); review: {len(review)} data-quality remarks")
        for q in sorted(quarantine, key=lambda q: -q["confidence"])[:10]:
            lines.append(f"  #{q['index']}  {q['confidence']:.2f}  {', '.join(q['attack'])}  ({', '.join(q['methods'])})")
    if report.get("outputs"):
        lines.append("files produced:")
        for entry in report["outputs"]:
            where = entry.get("path") or entry.get("href") or entry["name"]
            lines.append(f"  {entry['name']}  {entry['description']}  -> {where}")
    return lines
