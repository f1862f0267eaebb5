"""The HTML report (worker/report_formats/html.py) in a real browser: headless Chromium (Debian's, driven by playwright)
opens the page of a real poisoned scan (tests/victims.py: digits, a 2x2 corner patch, 10% relabelled to class 0) as the
CLI writes it (file://) and as the API serves it (with its headers), finds the verdict, the target class and the
trigger images, records no console message, no page error and no request but the page itself, and its screenshot is
not blank. Hostile names and a scan that could not run render as text."""

import base64
import contextlib
import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.victims import TARGET
from worker.images import png_bytes
from worker.report_formats.html import CONTENT_SECURITY_POLICY, to_html

CHROMIUM = "/usr/bin/chromium"
LAPTOP = {"width": 1366, "height": 768}
SCAN_CONFIG = {"backdoor_assessment": {"nc_steps": 400, "nc_budget_s": 60, "remediate": "auto", "retrain_epochs": 30,
                                       "retrain_batch": 64}}
HOSTILE = ["<script>alert(1)</script>.npz", '"><img src=x onerror=alert(1)>', "$\\frac{1}{$ {{7*7}} &amp; \u202eevil"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: scripts/ensure-services.sh installs it (./run test runs it)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def cli_page(digit_victims, tmp_path_factory):
    """``poisonscan scan --format html --out DIR`` on the backdoored victim, its trigger and the clean holdout set."""
    from app.cli import main

    v, out = digit_victims["backdoored"], tmp_path_factory.mktemp("html") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["scan", "--model", str(v["model"]), "--dataset", str(v["dataset"]), "--trigger",
                     str(digit_victims["trigger"]), "--holdout", str(digit_victims["holdout"]),
                     "--detector-config", json.dumps(SCAN_CONFIG), "--format", "html", "--out", str(out)])
    return code, printed.getvalue(), out


@dataclass
class Opened:
    verdict: str
    targets: str
    triggers: list[dict]  # per img.trigger: complete, naturalWidth, alt
    broken_images: int  # images on the page that did not decode
    page_width: int
    console: list[str]
    requests: list[str]
    errors: list[str]
    screenshot: Path


def open_page(browser, url: str, screenshot: Path, serve: dict | None = None) -> Opened:
    """Load ``url`` in a laptop-sized page, recording console messages, page errors, dialogs and every request;
    ``serve``: answer ``url`` with this status, headers and body (as the API answered) instead of fetching it."""
    page = browser.new_page(viewport=LAPTOP)
    console, requests, errors = [], [], []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    if serve is not None:
        page.route(url, lambda route: route.fulfill(**serve))
    try:
        page.goto(url, wait_until="load")
        opened = Opened(
            verdict=page.inner_text("#verdict"),
            targets=page.inner_text("#target-classes") if page.query_selector("#target-classes") else "",
            triggers=page.eval_on_selector_all(
                "img.trigger", "els => els.map(e => ({complete: e.complete, width: e.naturalWidth, alt: e.alt}))"),
            broken_images=page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length"),
            page_width=page.evaluate("document.documentElement.scrollWidth"),
            console=console, requests=requests, errors=errors, screenshot=screenshot)
        page.screenshot(path=screenshot, full_page=True)
    finally:
        page.close()
    return opened


def assert_not_blank(screenshot: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[1] == LAPTOP["width"] and pixels.shape[0] >= LAPTOP["height"]
    assert pixels.std() > 0.1, "the screenshot is blank"
    assert (pixels.min(axis=2) < 0.5).mean() > 0.02  # a real share of the page is drawn, not a few specks


def assert_poisoned_page(opened: Opened, url: str) -> None:
    assert opened.verdict == "FAIL"
    assert f"Backdoor target class: {TARGET}" in " ".join(opened.targets.split())
    assert len(opened.triggers) == 3 and all(t["complete"] and t["width"] == 8 * 28 for t in opened.triggers)
    assert all(f"toward class {TARGET}" in t["alt"] for t in opened.triggers)
    assert opened.broken_images == 0
    assert opened.page_width <= LAPTOP["width"]  # no sideways scrolling on a laptop screen
    assert opened.console == [] and opened.errors == []
    assert [r for r in opened.requests if not r.startswith("data:")] == [url]  # the page itself, nothing else
    assert_not_blank(opened.screenshot)


def test_cli_page_of_a_poisoned_scan_in_headless_chromium(cli_page, browser, tmp_path):
    code, printed, out = cli_page
    page = out / "report.html"
    assert code == 1  # fail, as the text and JSON formats exit
    assert printed.splitlines() == ["verdict: FAIL (a critical finding is at or above fail_at=high)", f"report: {page}"]
    url = page.resolve().as_uri()
    assert_poisoned_page(open_page(browser, url, tmp_path / "cli.png"), url)
    html = page.read_text()
    for section in ("summary", "backdoor", "remediation", "activations", "samples", "findings", "inputs"):
        assert f'<section id="{section}"' in html
    for plot in ("anomaly-plot", "probing-plot", "remediation-plot", "projection-plot", "spectral-plot"):
        assert f'id="{plot}" src="data:image/png;base64,' in html
    assert html.count('class="thumb quarantine"') == 32  # the 32 most suspicious samples, all quarantined


def test_figures_npz_is_small_and_has_no_pickles(cli_page):
    _, _, out = cli_page
    figures = out / "figures.npz"
    assert figures.stat().st_size < 1 << 20
    with np.load(figures, allow_pickle=False) as z:
        classes, which, flagged = z["projection_classes"], z["projection_class"], z["projection_quarantined"]
        assert classes[0] == str(TARGET) and len(classes) == 10  # the class holding the quarantine is drawn first
        assert flagged[which == 0].sum() > 100 and not flagged[which != 0].any()
        assert z["projection_class_quarantined"][0] >= flagged.sum() and not z["projection_class_quarantined"][1:].any()
        assert z["projection_xy"].shape == (len(which), 2) and np.isfinite(z["projection_xy"]).all()
        # the poison gathers at one end of its class's top singular direction (spectral signatures)
        first, marked = z["projection_xy"][which == 0, 0], flagged[which == 0]
        assert abs(np.median(first[marked]) - np.median(first[~marked])) > first.std()
        assert z["thumbnail_pixels"].shape == (32, 8, 8) and z["thumbnail_pixels"].dtype == np.uint8
        assert set(z["thumbnail_label"]) == {str(TARGET)} and set(z["thumbnail_list"]) == {"quarantine"}
        assert (z["thumbnail_pixels"][:, 5:7, 5:7] == 255).mean() > 0.9  # they carry the trigger patch


def test_api_serves_the_same_page_with_a_strict_content_security_policy(digit_victims, browser, tmp_path, request):
    from app.auth import create_key
    from app.main import create_app
    from tests.conftest import make_settings
    from worker.jobs import execute_scan

    settings = make_settings("embedded", tmp_path, request, max_upload_bytes=64 << 20)
    v = digit_victims["backdoored"]
    paths = {"model": v["model"], "dataset": v["dataset"], "holdout": digit_victims["holdout"],
             "trigger": digit_victims["trigger"]}
    config = {"backdoor_assessment": SCAN_CONFIG["backdoor_assessment"] | {"remediate": "never"}}
    with TestClient(create_app(settings)) as api:
        with api.app.state.sessionmaker() as session:
            headers = {"X-API-Key": create_key(session, "html", "html")[1]}
        body = {role: api.post("/v1/artifacts", content=p.read_bytes(), params={"filename": p.name},
                               headers=headers | {"content-type": "application/octet-stream"}).json()["sha256"]
                for role, p in paths.items()}
        options = {"detectors": ["backdoor_activations", "backdoor_assessment"], "detector_config": config}
        scan = api.post("/v1/scans", json=body | {"options": options}, headers=headers).json()
        url = f"/v1/scans/{scan['id']}/report.html"
        assert api.get(url, headers=headers).status_code == 409
        assert execute_scan(uuid.UUID(scan["id"]), api.app.state.sessionmaker, settings) == "succeeded"
        answer = api.get(url, headers=headers)
        report = api.get(f"/v1/scans/{scan['id']}/report", headers=headers).json()
        downloaded = {o["name"]: api.get(o["href"], headers=headers).content for o in report["outputs"]}
        other = {"X-API-Key": _key(api, "other")}
        assert api.get(url, headers=other).status_code == 404  # another tenant's scan
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == f"{CONTENT_SECURITY_POLICY}; frame-ancestors 'none'"
    # the page the API rendered from its artifact store is the page of the report and the files a client downloads
    assert answer.text == to_html(report, lambda entry: downloaded[entry["name"]])
    trigger_pngs = {hashlib.sha256(base64.b64decode(uri)).hexdigest()
                    for uri in re.findall(r'class="trigger" src="data:image/png;base64,([^"]+)"', answer.text)}
    assert trigger_pngs == {o["sha256"] for o in report["outputs"] if o["media_type"] == "image/png"}
    page_url = f"http://poisonscan.test{url}"
    served = {"status": 200, "headers": dict(answer.headers), "body": answer.content}
    opened = open_page(browser, page_url, tmp_path / "api.png", serve=served)
    assert opened.verdict == "FAIL" and len(opened.triggers) == 3
    assert opened.console == [] and opened.errors == [] and opened.requests == [page_url]
    assert_not_blank(opened.screenshot)


def _key(api, tenant: str) -> str:
    from app.auth import create_key

    with api.app.state.sessionmaker() as session:
        return create_key(session, tenant, tenant)[1]


# ------------------------------------------------------------------------------------------------ fast: no scan

class _Elements(HTMLParser):
    """Every element and attribute the page creates, and its text as a browser shows it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(html: str) -> _Elements:
    """No script, no event handler, no image but inline PNG data, nothing that navigates or loads."""
    page = _Elements(html)
    assert {tag for tag, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3",
                                             "p", "section", "div", "span", "strong", "ul", "li", "table", "tr", "th",
                                             "td", "img", "figure", "figcaption", "details", "summary", "code", "footer",
                                             "br"}
    assert not [(tag, a) for tag, attrs in page.tags for a in attrs if a.startswith("on") or a in ("href", "srcset")]
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in page.tags if tag == "img")
    csp = [attrs["content"] for tag, attrs in page.tags if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [CONTENT_SECURITY_POLICY]
    return page


def hostile_report() -> tuple[dict, dict[str, bytes]]:
    """A report whose every artifact-chosen string is hostile: file and member names, class labels (also drawn into
    plots), output names, finding titles and evidence; and the output files a reader returns (a garbage
    figures.npz, whose plots are then left out)."""
    bad, img, mathtext = HOSTILE
    png = png_bytes(np.eye(8), scale=4)
    outputs = {f"{img}-mask.png": png, f"{img}-pattern.png": png, f"{img}-stamped.png": b"<svg onload=alert(1)>",
               "figures.npz": b"PK\x03\x04 not a zip"}
    votes = {bad: ["probing", "reconstruction"], mathtext: ["probing"]}
    evidence = {"classes": [bad, mathtext, img], "votes": votes, "target_classes": [bad], "possible_target_classes": [mathtext],
                "strip": {"confirmed_share": 0.5, "checked": 3, "threshold_bits": 0.1},
                "probing": {"inputs": 10, "candidates": [{"trigger": img, "attack_success": [0.9, 0.1, 0.0]},
                                                         {"trigger": mathtext, "attack_success": [0.0, 0.6, 0.2]}]},
                "reconstruction": {"targets": [bad], "anomaly_threshold": 2.0,
                                   "per_class": {bad: {"mask_l1": 1.0, "anomaly_index": 3.0, "attack_success": 1.0},
                                                 mathtext: {"mask_l1": 9.0, "anomaly_index": 0.1, "attack_success": 0.3}},
                                   "images": {bad: {"mask": f"{img}-mask.png", "pattern": f"{img}-pattern.png",
                                                    "stamped": f"{img}-stamped.png"}}}}
    verdict = {"detector": "backdoor_assessment", "layer": "model", "severity": "critical", "score": 0.9,
               "technique": "AML.T0018", "title": f"the model is backdoored toward class {bad}", "explanation": img,
               "remediation": f"remove {mathtext}", "evidence": evidence}
    remediation = {"detector": "backdoor_assessment", "layer": "model", "severity": "high", "score": 0.5,
                   "technique": "AML.T0018", "title": "remediation did not remove the backdoor", "explanation": bad,
                   "evidence": {"rounds": [{"attack_success": [{"trigger": img, "class": bad, "before": 0.9, "after": 0.4}]}],
                                "clean_accuracy": {"before": 0.9, "after": 0.8, "on": mathtext},
                                "stopped_because": bad}}
    flips = {"detector": "data_poisoning", "layer": "data", "severity": "medium", "score": 0.4, "technique": "AML.T0020",
             "title": f"{img} relabelled", "explanation": "", "evidence": {"location": bad, "noise_matrix": {
                 "classes": [bad, mathtext, img], "counts": [[5, 3, 0], [0, 0, 0], [1, 0, 2]]}}}
    report = {"scan_id": bad, "generated_at": img, "schema_version": "1.0", "verdict": "fail", "verdict_reason": img,
              "policy": {"fail_at": bad},
              "inputs": [{"role": "model", "filename": bad, "kind": "keras", "sha256": img, "size": 1},
                         {"role": "dataset", "filename": img, "kind": mathtext, "sha256": None, "size": 2}],
              "quarantine": [{"index": 3, "confidence": 0.9, "attack": [img], "methods": [bad]}],
              "quarantine_min_confidence": 0.5, "review": [],
              "outputs": [{"name": name, "media_type": "image/png", "description": img, "size": len(data), "sha256": bad}
                          for name, data in outputs.items()],
              "detectors": [{"name": "backdoor_assessment", "layer": "model", "status": "ok", "error": None,
                             "findings": [verdict, remediation], "duration_s": 1.0},
                            {"name": "data_poisoning", "layer": "data", "status": "error", "error": img,
                             "findings": [flips], "duration_s": 0.5}]}
    return report, outputs


def test_hostile_names_render_as_text(browser, tmp_path):
    report, files = hostile_report()
    html = to_html(report, lambda entry: files.get(entry["name"]))
    page = assert_inert(html)
    text = "".join(page.text)
    for name in HOSTILE:  # shown as text; a bidi override as a visible escape, so it cannot reorder what follows
        assert name.replace("\u202e", "\\u202e") in text
    assert "\u202e" not in text
    assert "activations" not in {attrs.get("id") for _, attrs in page.tags}  # figures.npz unreadable: left out
    images = {attrs.get("alt") for tag, attrs in page.tags if tag == "img"}
    assert {f"mask toward class {HOSTILE[0]}", f"pattern toward class {HOSTILE[0]}"} <= images
    assert f"stamped toward class {HOSTILE[0]}" not in images  # not a PNG: not embedded
    for plot in ("anomaly-plot", "probing-plot", "remediation-plot", "label-flip-plot"):  # drawn, names as plain text
        assert plot in {attrs.get("id") for _, attrs in page.tags}
    path = tmp_path / "hostile.html"
    path.write_text(html)
    opened = open_page(browser, path.as_uri(), tmp_path / "hostile.png")
    assert opened.verdict == "FAIL" and opened.console == [] and opened.errors == []
    assert opened.requests == [path.as_uri()] and opened.broken_images == 0


def test_a_scan_that_could_not_run_renders(tmp_path):
    from app.cli import rejected_report

    report = rejected_report({"dataset": tmp_path / HOSTILE[1]}, f"the dataset holds NaN in {HOSTILE[0]}")
    page = assert_inert(to_html(report))
    text = " ".join("".join(page.text).split())
    assert "FAIL" in text and f"the scan could not be completed: the dataset holds NaN in {HOSTILE[0]}" in text
    assert HOSTILE[1] in text and "Do not use these files until the reason is resolved" in text
    sections = {attrs["id"] for tag, attrs in page.tags if tag == "section"}
    assert sections == {"summary", "findings", "inputs"}


def test_a_pickled_figures_file_is_not_loaded():
    buffer = io.BytesIO()
    np.savez(buffer, projection_xy=np.array([{"x": 1}], dtype=object))  # an object array: needs pickle to read
    entry = {"name": "figures.npz", "media_type": "application/octet-stream", "size": len(buffer.getvalue())}
    html = to_html({"verdict": "pass", "verdict_reason": "", "outputs": [entry]}, lambda e: buffer.getvalue())
    assert 'id="activations"' not in html and "Nothing to do" in html


def test_html_format_needs_an_output_folder(tmp_path, capsys):
    from app.cli import main

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]))
    assert main(["scan", "--dataset", str(tmp_path / "d.npz"), "--format", "html"]) == 2
    assert "--format html writes DIR/report.html" in capsys.readouterr().err
