"""YAML configs read as parser events only (never ``yaml.load``, never a constructor): python/* tags that make
an unsafe loader (yaml.load with Loader=yaml.Loader/UnsafeLoader, old PyYAML defaults) import modules or call
functions, and alias bombs that explode when a loader expands them.

Named ``yaml_tags`` so that ``import yaml`` in this package always means PyYAML."""

from pathlib import Path

import yaml

from worker.findings import Finding, Severity
from worker.inspect.common import _DO_NOT_LOAD, _capped, _finding, _short, not_inspected
from worker.inspect.jinja import check_jinja_template

MAX_YAML_BYTES = 16 * 1024 * 1024
MAX_YAML_EVENTS = 5_000_000
MAX_EXPANDED_NODES = 10_000_000  # what the aliases would expand to in a loader
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in (~20x faster); events are the same
_PYTHON_TAG = "tag:yaml.org,2002:python/"
_STANDARD_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in (
    "str", "int", "float", "bool", "null", "map", "seq", "binary", "timestamp", "omap", "pairs", "set", "merge",
    "value", "yaml"))


def check_yaml(path) -> list[Finding]:
    path = Path(path)
    what = "YAML file"
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            return [not_inspected(what, f"The file is {size:,} bytes, over the {MAX_YAML_BYTES:,} poisonscan parses.", path.name)]
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [not_inspected(what, f"The file cannot be read as UTF-8 text ({type(exc).__name__}).", path.name)]
    return check_yaml_text(text, path.name)


def check_yaml_text(text: str, location: str) -> list[Finding]:
    what = "YAML file"
    try:
        scan = _scan_events(text)
    except yaml.YAMLError as exc:
        return [not_inspected(what, f"It does not parse as YAML ({_short(str(exc), 200)}); a lenient loader may "
                              "still read it.", location)]
    except _TooLarge as exc:
        return [not_inspected(what, str(exc), location)]
    findings = []
    if scan["python"]:
        findings.append(_finding(
            "YAML uses python/* tags (code execution on load)", Severity.critical,
            "Tags such as !!python/object/apply make an unsafe YAML loader (yaml.load with yaml.Loader or "
            "UnsafeLoader, yaml.unsafe_load, old PyYAML defaults) import modules and call functions while reading "
            "the file: loading this config runs code.",
            _DO_NOT_LOAD + " Load configs only with yaml.safe_load.",
            {"location": location, "tags": _capped(scan["python"])}))
    for line, template in scan["templates"]:  # serving stacks render templates kept in configs (chat_template)
        findings += [f for f in check_jinja_template(template, f"{location}:{line}") if f.severity.rank >= Severity.medium.rank]
    if scan["expanded"] > MAX_EXPANDED_NODES:
        findings.append(_finding(
            "YAML alias bomb", Severity.high,
            f"Its anchors and aliases expand to more than {MAX_EXPANDED_NODES:,} nodes (a 'billion laughs' "
            "document): a loader runs out of memory.", _DO_NOT_LOAD,
            {"location": location, "aliases": scan["aliases"]}))
    if scan["custom"]:
        findings.append(_finding(
            "YAML uses custom tags", Severity.low,
            "Custom tags only mean something to a loader with matching constructors; check which loader reads it.",
            "Make sure the config is read with yaml.safe_load or a loader that rejects unknown tags.",
            {"location": location, "tags": _capped(scan["custom"])}))
    if not any(f.severity.rank >= Severity.medium.rank for f in findings):
        findings.append(_finding(
            "YAML parsed: no python/* tags", Severity.info,
            f"{scan['events']:,} parser events, {scan['aliases']} aliases; no tag asks a loader to build Python objects.",
            evidence={"location": location, "documents": scan["documents"]}))
    return findings


class _TooLarge(Exception):
    pass


def _scan_events(text: str) -> dict:
    """Walk the parser's events (tags come resolved: %TAG handles and %-escapes applied) and size what the
    aliases expand to: each collection's size is known when it ends, each alias adds its anchor's size."""
    python, custom, templates = [], [], []
    anchor_size: dict[str, int] = {}
    open_sizes: list[list] = []  # [anchor, nodes so far] per open collection
    events = aliases = documents = 0
    expanded = 0
    for event in yaml.parse(text, Loader=_PARSER):
        events += 1
        if events > MAX_YAML_EVENTS:
            raise _TooLarge(f"It has more than {MAX_YAML_EVENTS:,} parser events.")
        tag = getattr(event, "tag", None)
        if tag and tag not in _STANDARD_TAGS and tag != "!":
            (python if tag.startswith(_PYTHON_TAG) else custom).append({"tag": _short(tag, 200), "line": event.start_mark.line + 1})
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
        size = None
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            size = 1 if isinstance(event, yaml.ScalarEvent) else anchor_size.get(event.anchor, 1)
            aliases += isinstance(event, yaml.AliasEvent)
            if isinstance(event, yaml.ScalarEvent) and event.anchor:
                anchor_size[event.anchor] = 1
            if isinstance(event, yaml.ScalarEvent) and ("{{" in event.value or "{%" in event.value) and len(templates) < 100:
                templates.append((event.start_mark.line + 1, event.value))
        elif isinstance(event, yaml.CollectionStartEvent):
            open_sizes.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent) and open_sizes:
            anchor, size = open_sizes.pop()
            if anchor:
                anchor_size[anchor] = size
        if size is not None:
            if open_sizes:
                open_sizes[-1][1] = min(open_sizes[-1][1] + size, 10 * MAX_EXPANDED_NODES)
            else:
                expanded += size
            expanded = max(expanded, max((s for _, s in open_sizes), default=0))
    return {"python": python, "custom": custom, "templates": templates, "expanded": expanded, "aliases": aliases, "events": events,
            "documents": documents}
