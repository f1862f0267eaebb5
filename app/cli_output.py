"""Rendering for the CLI: a progress bar on stderr, the report as text or JSON, the exit code."""

import json
import sys

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
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {percent:5.1f}% {stage[:40]:40}"
        self.stream.write(line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


def render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    lines = [f"verdict: {report['verdict'].upper()} ({report['verdict_reason']})"]
    for item in report["inputs"]:
        lines.append(f"  {item['role']}: {item.get('filename') or '-'}  {item['kind']}  sha256={item['sha256']}")
    for det in report["detectors"]:
        status = "" if det["status"] == "ok" else f"  [{det['status']}: {det['error']}]"
        lines.append(f"- {det['layer']}/{det['name']} ({det['technique']}) {det['duration_s']:.3f}s{status}")
        for f in det["findings"]:
            lines.append(f"    [{f['severity']:>8}] {f['title']}")
            if f["severity"] not in ("info",) and f.get("remediation"):
                lines.append(f"               fix: {f['remediation']}")
    if report.get("outputs"):
        lines.append("files produced:")
        for entry in report["outputs"]:
            where = entry.get("path") or entry.get("href") or entry["name"]
            lines.append(f"  {entry['name']}  {entry['description']}  -> {where}")
    return "\n".join(lines)
