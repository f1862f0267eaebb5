"""A scan report as one self-contained HTML page, for the people who act on it: the verdict, how sure we are and what to
do at the top, then the evidence as pictures (reconstructed trigger, trigger probing heat map, activation projections,
spectral scores, remediation before/after, label-flip matrix, the most suspicious samples) and every finding.

``to_html(report, read_output)`` is a pure function of the report and its output files: ``read_output(entry)`` returns
the bytes of one ``report["outputs"]`` entry, or None (the CLI reads the scan's output folder, the API the artifact
store). Only small outputs are asked for: the trigger PNGs and ``figures.npz`` (``worker.figures``). A section whose
data is missing is left out; a report of a scan that could not run renders too.

Nothing on the page is fetched: images are PNG ``data:`` URIs, styles inline, no script, and the page carries a
Content-Security-Policy that forbids loading anything else. Text from the report (file names, class names, titles,
evidence) is escaped by Jinja2's autoescape; in the plots it is drawn with mathtext off. Plots are drawn by matplotlib
on its Agg canvas (no pyplot, no GUI backend), imported on first use so that the API starts without it.
"""

import base64
import io
import json
import logging
import math
import re
import zipfile
from collections.abc import Callable
from functools import lru_cache

from worker.characters import CONTROLS, INVISIBLE, unmasked
from worker.findings import Severity
from worker.report_formats import findings, tool_version

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                           "form-action 'none'")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_OUTPUT_BYTES = 8 << 20  # outputs read for the page: trigger PNGs and figures.npz are far smaller
DPI = 100
LABEL_CHARS = 18  # class names in plots
TRIGGER_CHARS = 30
HEATMAP_ROWS = 16  # the strongest candidate triggers; the others move no class
HEATMAP_CLASSES = 20
QUARANTINE_ROWS = 10
ReadOutput = Callable[[dict], bytes | None]
# controls and invisible characters from an artifact are shown as escapes: a name must not reorder the text around
# it, and a trigger of zero-width spaces must not print as nothing
_INVISIBLE = re.compile(f"[{CONTROLS}{INVISIBLE}]")


def _nothing(entry: dict) -> None:
    return None


def to_html(report: dict, read_output: ReadOutput = _nothing) -> str:
    outputs = _Outputs(report.get("outputs") or [], read_output)
    items = findings(report)
    assessment = _find(items, "backdoor_assessment", "votes")
    figures = outputs.figures()
    page = {
        "csp": CONTENT_SECURITY_POLICY,
        "verdict": str(report.get("verdict") or "unknown"),
        "verdict_class": report.get("verdict") if report.get("verdict") in ("pass", "warn", "fail") else "other",
        "reason": report.get("verdict_reason") or "",
        "summary": _summary(report, items, assessment),
        "backdoor": _backdoor(assessment, outputs),
        "remediation": _remediation(_find(items, "backdoor_assessment", "rounds")),
        "activations": _activations(figures),
        "label_flips": _label_flips(_find(items, "data_poisoning", "noise_matrix")),
        "text_triggers": _text_triggers(items),
        "samples": _samples(report, figures),
        "findings": _findings_section(items),
        "inputs": report.get("inputs") or [],
        "detectors": [_detector_row(d) for d in report.get("detectors") or []],
        "outputs": report.get("outputs") or [],
        "meta": {"scan_id": report.get("scan_id"), "generated_at": report.get("generated_at"),
                 "schema_version": report.get("schema_version"), "version": tool_version(),
                 "policy": json.dumps(report["policy"]) if report.get("policy") else None},
    }
    return _template().render(**page)


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader

    env = Environment(loader=PackageLoader("worker.report_formats"), autoescape=True, finalize=_visible,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2")


def _visible(value):
    """Every value the page prints: control and bidi characters as visible escapes (autoescape does the rest)."""
    from markupsafe import Markup

    if not isinstance(value, str) or not _INVISIBLE.search(value):
        return value
    return Markup(_escaped(value)) if isinstance(value, Markup) else _escaped(value)


def _escaped(text: str) -> str:
    return _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# ------------------------------------------------------------------------------------------------ report data

class _Outputs:
    """The report's output files by name; bytes only for small files, as the reader gives them."""

    def __init__(self, entries: list[dict], read_output: ReadOutput) -> None:
        self.by_name = {e.get("name"): e for e in entries if isinstance(e, dict)}
        self.read_output = read_output

    def read(self, name) -> bytes | None:
        entry = self.by_name.get(name)
        if entry is None or not isinstance(entry.get("size"), int) or entry["size"] > MAX_OUTPUT_BYTES:
            return None
        return self.read_output(entry)

    def png_uri(self, name) -> str | None:
        data = self.read(name)
        return _data_uri(data) if data and data.startswith(PNG_SIGNATURE) else None

    def figures(self) -> dict:
        """``figures.npz``'s arrays (``worker.figures``), {} when the scan wrote none or it cannot be read."""
        import numpy as np

        from worker.figures import FIGURES_NAME

        data = self.read(FIGURES_NAME)
        if not data:
            return {}
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("figures.npz not drawn: %s", exc)
            return {}


def _find(items: list[dict], detector: str, evidence_key: str) -> dict | None:
    return next((f for f in items if f["detector"] == detector and evidence_key in (f.get("evidence") or {})), None)


def _rank(finding: dict) -> int:
    try:
        return Severity(finding.get("severity")).rank
    except ValueError:
        return 0


def _problems(items: list[dict]) -> list[dict]:
    problems = [f for f in items if f.get("severity") != "info"]
    return sorted(problems, key=lambda f: (-_rank(f), -(f.get("score") or 0)))


def _summary(report: dict, items: list[dict], assessment: dict | None) -> dict:
    problems = _problems(items)
    ev = (assessment or {}).get("evidence") or {}
    sure = []
    for label, methods in (ev.get("votes") or {}).items():
        sure.append(f"class {label}: {len(methods)} of 3 independent methods agree ({', '.join(map(str, methods))})")
    if (strip := ev.get("strip") or {}).get("confirmed_share") is not None:
        sure.append(f"STRIP confirms {strip['confirmed_share']:.0%} of the flagged training samples")
    quarantine = report.get("quarantine") or []
    if quarantine:
        sure.append(f"{len(quarantine)} training samples quarantined, each with poisoning confidence "
                    f">= {report.get('quarantine_min_confidence', 0.5)} (median "
                    f"{sorted(q['confidence'] for q in quarantine)[len(quarantine) // 2]:.2f})")
    if not sure:  # no method votes and nothing quarantined: how strongly the worst findings' evidence holds
        sure = [f"{f['severity']}: {f['title']} (score {f.get('score') or 0:.2f} of 1)" for f in problems[:3]]
    if not sure:
        sure.append("every detector that ran found nothing above info" if items else "no detector finished")
    todo = list(dict.fromkeys(f["remediation"] for f in problems if f.get("remediation")))[:3]
    if not todo:
        todo = (["Nothing to do: no finding reaches the policy's warn level."] if report.get("verdict") == "pass"
                else [f"Do not use these files until the reason is resolved: {report.get('verdict_reason') or 'unknown'}."])
    return {"found": [{"severity": f["severity"], "title": f["title"]} for f in problems[:6]], "sure": sure, "todo": todo,
            "targets": {"backdoored": [str(c) for c in ev.get("target_classes") or []],
                        "possible": [str(c) for c in ev.get("possible_target_classes") or []]}}


def _backdoor(assessment: dict | None, outputs: _Outputs) -> dict | None:
    if assessment is None:
        return None
    ev = assessment["evidence"]
    reconstruction = ev.get("reconstruction") or {}
    per_class = reconstruction.get("per_class") or {}
    triggers = []
    for label, names in (reconstruction.get("images") or {}).items():
        images = [{"kind": kind, "uri": uri} for kind in ("mask", "pattern", "stamped")
                  if (uri := outputs.png_uri((names or {}).get(kind)))]
        if images:
            triggers.append({"label": label, "images": images, "stats": per_class.get(label)})
    probing = ev.get("probing") or {}
    strip = ev.get("strip") or {}
    return {"votes": [{"label": label, "methods": methods} for label, methods in (ev.get("votes") or {}).items()],
            "triggers": triggers, "anomaly_plot": _plot_anomaly(reconstruction),
            "probing_plot": _plot_probing(probing, ev.get("classes") or []), "probing_inputs": probing.get("inputs"),
            "probing_candidates": len(probing.get("candidates") or []),
            "probing_shown": min(len(probing.get("candidates") or []), HEATMAP_ROWS),
            "strip": (f"STRIP: {strip['confirmed_share']:.0%} of the {strip.get('checked')} checked training samples fall "
                      f"under the entropy of clean inputs ({strip.get('threshold_bits')} bits)")
            if strip.get("confirmed_share") is not None else None}


def _remediation(finding: dict | None) -> dict | None:
    if finding is None or not finding["evidence"].get("rounds"):
        return None
    ev = finding["evidence"]
    last = ev["rounds"][-1]
    rows = [{"trigger": r["trigger"], "class": r["class"], "before": _percent(r["before"]), "after": _percent(r["after"])}
            for r in last.get("attack_success") or []]
    accuracy = ev.get("clean_accuracy") or {}
    return {"title": finding["title"], "stopped": f"Stopped because {ev.get('stopped_because', 'the rounds ran out')}.",
            "rows": rows, "plot": _plot_remediation(last.get("attack_success") or [], accuracy),
            "accuracy": {"before": _percent(accuracy.get("before")), "after": _percent(accuracy.get("after")),
                         "on": accuracy.get("on", "held-out inputs")} if "after" in accuracy else None}


def _activations(figures: dict) -> dict | None:
    if "projection_xy" not in figures or not len(figures["projection_xy"]):
        return None
    shown, total = len(figures["projection_index"]), int(figures["projection_class_sizes"].sum())
    return {"projection_plot": _plot_projections(figures), "spectral_plot": _plot_spectral(figures),
            "note": f"{shown} of the {total} samples of these classes are drawn (quarantined ones first)."
            if shown < total else ""}


def _label_flips(finding: dict | None) -> dict | None:
    import numpy as np

    matrix = (finding or {}).get("evidence", {}).get("noise_matrix") or {}
    if not matrix.get("counts") or len(matrix["counts"]) != len(matrix.get("classes") or []):
        return None
    flips = np.array(matrix["counts"], dtype=np.int64)
    np.fill_diagonal(flips, 0)  # a flagged sample whose suggested label is its own is no flip
    return {"plot": _plot_label_flips(matrix["classes"], flips)} if flips.any() else None


def _text_triggers(items: list[dict]) -> list[dict]:
    """Trigger n-grams and payloads of text data (``text_poisoning``): the trigger, its carriers per label and
    example texts, all artifact text (escaped by the template, control characters made visible)."""
    rows = []
    for f in items:
        ev = f.get("evidence") or {}
        if f["detector"] != "text_poisoning" or "trigger" not in ev:
            continue
        examples = [e if isinstance(e, str) else f"{e.get('prompt', '')} → {e.get('response', '')}"
                    for e in ev.get("examples") or []]
        rows.append({"trigger": [_escaped(unmasked(str(t))) for t in ev["trigger"]], "target": _escaped(str(ev.get("target", ""))),
                     "payload": _escaped(str(ev["payload"])) if ev.get("payload") else None,
                     "counts": {_escaped(str(k)): v for k, v in (ev.get("label_counts") or {}).items()},
                     "samples": len(ev.get("flagged") or []), "p_value": ev.get("p_value"),
                     "examples": [_escaped(e) for e in examples]})
    return rows


def _samples(report: dict, figures: dict) -> dict | None:
    quarantine = sorted(report.get("quarantine") or [], key=lambda q: (-q["confidence"], q["index"]))
    thumbnails = _thumbnails(figures)
    if not quarantine and not thumbnails:
        return None
    return {"quarantined": len(quarantine), "review": len(report.get("review") or []),
            "threshold": report.get("quarantine_min_confidence", 0.5), "thumbnails": thumbnails,
            "rows": [q | {"confidence": f"{q['confidence']:.2f}"} for q in quarantine[:QUARANTINE_ROWS]],
            "more": max(0, len(quarantine) - QUARANTINE_ROWS)}


def _thumbnails(figures: dict) -> list[dict]:
    from worker.images import png_bytes

    if "thumbnail_pixels" not in figures:
        return []
    out = []
    for pixels, index, label, confidence, which in zip(figures["thumbnail_pixels"], figures["thumbnail_index"],
                                                       figures["thumbnail_label"], figures["thumbnail_confidence"],
                                                       figures["thumbnail_list"], strict=True):
        out.append({"uri": _data_uri(png_bytes(pixels, 0, 255)), "index": int(index), "label": str(label),
                    "list": str(which), "confidence": "" if math.isnan(confidence) else f"{confidence:.2f}"})
    return out


def _findings_section(items: list[dict]) -> dict:
    problems = [f | {"where": _where(f.get("evidence") or {}), "remediation": f.get("remediation") or "",
                     "technique": f.get("technique") or "", "explanation": f.get("explanation") or ""}
                for f in _problems(items)]
    return {"problems": problems, "info": [f for f in items if f.get("severity") == "info"]}


def _where(evidence: dict) -> str | None:
    """Where in the artifact a finding is: a member path, a pickle location."""
    for key in ("location", "file"):
        if isinstance(evidence.get(key), str) and evidence[key]:
            return evidence[key]
    return None


def _detector_row(d: dict) -> dict:
    note = d.get("error") or d.get("skipped_because") or ""
    return {"name": d.get("name"), "layer": d.get("layer"), "status": d.get("status"), "note": note,
            "seconds": f"{d.get('duration_s') or 0:.2f}"}


def _percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _short(label, limit: int = LABEL_CHARS) -> str:
    text = _escaped(str(label))
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


# ------------------------------------------------------------------------------------------------ plots

def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas: no pyplot, no global backend, nothing kept between renders."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return _data_uri(buffer.getvalue())


def _labels(set_labels, labels, limit: int = LABEL_CHARS, **kwargs) -> None:
    """Tick labels from the report (class and trigger names) as plain text: no mathtext, cut short."""
    set_labels([_short(label, limit) for label in labels], parse_math=False, **kwargs)


def _plot_anomaly(reconstruction: dict) -> str | None:
    per_class = reconstruction.get("per_class") or {}
    if len(per_class) < 2:
        return None
    labels = list(per_class)
    if len(labels) > HEATMAP_CLASSES:
        labels = sorted(labels, key=lambda c: -per_class[c].get("anomaly_index", 0))[:HEATMAP_CLASSES]
    values = [per_class[c].get("anomaly_index", 0) for c in labels]
    targets = {str(t) for t in reconstruction.get("targets") or []}
    figure = _figure(9, 2.6)
    ax = figure.subplots()
    ax.bar(range(len(labels)), values, color=["#b3261e" if c in targets else "#8b95a1" for c in labels])
    ax.axhline(reconstruction.get("anomaly_threshold", 2.0), color="#b26a00", linestyle="--", linewidth=1,
               label="outlier threshold")
    ax.set_xticks(range(len(labels)))
    _labels(ax.set_xticklabels, labels)
    ax.set_xlabel("class")
    ax.set_ylabel("anomaly index")
    ax.set_title("Neural Cleanse: how much smaller the trigger toward each class is than usual (red: target)")
    ax.legend(loc="upper right", fontsize=8)
    return _png(figure)


def _plot_probing(probing: dict, classes: list) -> str | None:
    import numpy as np

    candidates = [c for c in probing.get("candidates") or [] if c.get("attack_success")]
    if not candidates:
        return None
    candidates = sorted(candidates, key=lambda c: -max(c["attack_success"]))[:HEATMAP_ROWS]
    matrix = np.array([c["attack_success"] for c in candidates], dtype=float)
    columns = np.arange(matrix.shape[1])
    if len(columns) > HEATMAP_CLASSES:  # the classes some trigger moves most
        columns = np.sort(np.argsort(-matrix.max(axis=0))[:HEATMAP_CLASSES])
    matrix = matrix[:, columns]
    names = [classes[i] if i < len(classes) else i for i in columns]
    figure = _figure(9, 1.4 + 0.2 * len(candidates))
    ax = figure.subplots()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", aspect="auto", interpolation="nearest")
    for (row, col), value in np.ndenumerate(matrix):
        if value >= 0.3:
            ax.text(col, row, f"{value:.0%}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.7 else "white")
    ax.set_xticks(range(len(columns)))
    _labels(ax.set_xticklabels, names)
    ax.set_yticks(range(len(candidates)))
    _labels(ax.set_yticklabels, [c["trigger"] for c in candidates], TRIGGER_CHARS, fontsize=8)
    ax.set_xlabel("class the inputs switch to")
    figure.colorbar(image, ax=ax, label="attack success", fraction=0.03)
    return _png(figure)


def _plot_remediation(rows: list[dict], accuracy: dict) -> str | None:
    import numpy as np

    rows = [r for r in rows if isinstance(r.get("before"), int | float) and isinstance(r.get("after"), int | float)]
    if not rows and "after" not in accuracy:
        return None
    figure = _figure(9, 1.6 + 0.35 * max(len(rows), 2))
    ax_asr, ax_acc = figure.subplots(1, 2, width_ratios=[3, 1])
    y = np.arange(len(rows))
    for key, offset, colour in (("before", -0.2, "#b3261e"), ("after", 0.2, "#1e7d34")):
        values = [r[key] for r in rows]
        ax_asr.barh(y + offset, values, height=0.4, color=colour, label=key)
        for row, value in zip(y, values, strict=True):
            ax_asr.text(value, row + offset, f" {value:.0%}", va="center", fontsize=7)
    ax_asr.set_yticks(y)
    _labels(ax_asr.set_yticklabels, [f"{r['trigger']} \u2192 {r['class']}" for r in rows], TRIGGER_CHARS, fontsize=8)
    ax_asr.invert_yaxis()
    ax_asr.set_xlim(0, 1.12)
    ax_asr.set_xlabel("attack success")
    ax_asr.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=2, fontsize=8, frameon=False)
    if "after" in accuracy:
        values = [accuracy.get("before") or 0, accuracy["after"]]
        ax_acc.bar(["before", "after"], values, color=["#8b95a1", "#1e7d34"])
        for i, v in enumerate(values):
            ax_acc.text(i, v, f"{v:.1%}", ha="center", va="bottom", fontsize=8)
        ax_acc.set_ylim(0, 1.08)
        ax_acc.set_title("clean accuracy", fontsize=10)
    else:
        ax_acc.set_axis_off()
    return _png(figure)


def _plot_projections(figures: dict) -> str:
    classes, quarantined = figures["projection_classes"], figures["projection_class_quarantined"]
    columns = min(4, len(classes))
    rows = math.ceil(len(classes) / columns)
    figure = _figure(9, 2.3 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    xy, which, flagged = figures["projection_xy"], figures["projection_class"], figures["projection_quarantined"]
    for position, ax in enumerate(axes):
        if position >= len(classes):
            ax.set_axis_off()
            continue
        mine = which == position
        ax.scatter(*xy[mine & ~flagged].T, s=5, color="#8b95a1", alpha=0.6, linewidths=0, label="other samples")
        ax.scatter(*xy[mine & flagged].T, s=9, color="#b3261e", marker="x", linewidths=0.8, label="quarantined")
        ax.set_title(f"class {_short(classes[position])}: {int(quarantined[position])} of "
                     f"{int(figures['projection_class_sizes'][position])} quarantined", fontsize=9, parse_math=False)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="best", fontsize=7, markerscale=2)
    return _png(figure)


def _plot_spectral(figures: dict) -> str | None:
    import numpy as np

    classes, which, flagged = figures["projection_classes"], figures["projection_class"], figures["projection_quarantined"]
    shown = [p for p in range(len(classes)) if (which == p).sum() > 1][:4]
    if not shown:
        return None
    figure = _figure(9, 2.4)
    axes = figure.subplots(1, len(shown), squeeze=False).ravel()
    for ax, position in zip(axes, shown, strict=True):
        coordinate = figures["projection_xy"][which == position, 0]
        marked = flagged[which == position]
        bins = np.linspace(float(coordinate.min()), float(coordinate.max()) + 1e-6, 31)
        ax.hist(coordinate[~marked], bins=bins, color="#8b95a1", alpha=0.8, label="other samples")
        if marked.any():
            ax.hist(coordinate[marked], bins=bins, color="#b3261e", alpha=0.7, label="quarantined")
        ax.set_title(f"class {_short(classes[position])}", fontsize=9, parse_math=False)
        ax.set_xlabel("top singular direction", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("samples", fontsize=8)
    axes[0].legend(fontsize=7)
    return _png(figure)


def _plot_label_flips(classes: list, matrix) -> str:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    keep = np.arange(len(classes))
    if len(classes) > HEATMAP_CLASSES:  # the classes most flips come from or go to
        traffic = matrix.sum(axis=0) + matrix.sum(axis=1)
        keep = np.sort(np.argsort(-traffic)[:HEATMAP_CLASSES])
    matrix = matrix[np.ix_(keep, keep)]
    names = [classes[i] for i in keep]
    side = 2.2 + 0.26 * len(keep)
    figure = _figure(min(9, side + 1.2), side)
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="Reds", interpolation="nearest")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(keep)))
    _labels(ax.set_xticklabels, names, rotation=90)
    ax.set_yticks(range(len(keep)))
    _labels(ax.set_yticklabels, names)
    ax.set_xlabel("label the model suggests")
    ax.set_ylabel("given label")
    figure.colorbar(image, ax=ax, label="samples", fraction=0.04, ticks=MaxNLocator(integer=True))
    return _png(figure)
