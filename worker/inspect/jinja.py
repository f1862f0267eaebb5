"""Chat templates (Jinja2) checked statically: parsed to the AST, never rendered.

A chat template runs when a model server formats a conversation; an unsandboxed or badly sandboxed renderer
lets a template reach Python through dunder attributes and template globals (server-side template injection:
CVE-2024-34359 in llama-cpp-python and its relatives). Templates hide in tokenizer_config.json, chat_template.json,
*.jinja files and GGUF metadata; ``check_hf_json`` also flags ``auto_map`` (custom Python code)."""

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from worker.findings import Finding, Severity
from worker.inspect.common import (MAX_JSON_BYTES, _DO_NOT_LOAD, _capped, _finding, _json_pairs_with_duplicates,
                                   _reject_constant, _short, not_inspected)

MAX_TEMPLATE_CHARS = 1024 * 1024  # real chat templates are a few kB; GGUF and JSON values are capped to this
MAX_TEMPLATE_NODES = 200_000
MAX_TEMPLATES_PER_FILE = 64
_MAX_FOLD_CHARS = 10_000  # strings built while folding constants
_MAX_RANGE = 100_000  # Jinja's own sandbox refuses larger ranges

# Attributes that lead from any object to Python internals (the sandbox refuses every name starting with "_").
ESCAPE_ATTRIBUTES = frozenset({
    "mro", "func_globals", "func_code", "func_closure", "f_globals", "f_locals", "f_builtins", "f_back", "f_code",
    "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code",
    "im_func", "im_self", "im_class", "format_map", "os", "sys", "builtins", "subprocess", "popen", "system",
    "modules", "import_module", "application",
})
# Names whose call means running commands or code, reading files, or reflecting on objects.
DANGEROUS_CALLEES = frozenset({
    "popen", "system", "eval", "exec", "execfile", "compile", "open", "import_module", "__import__", "getattr",
    "setattr", "delattr", "globals", "locals", "vars", "check_output", "check_call", "Popen", "spawnl", "spawnv",
    "spawnve", "execv", "execve", "execl", "fork", "load_module", "run_module", "subclasses", "load", "loads",
})
MODULE_NAMES = frozenset({"os", "sys", "subprocess", "builtins", "importlib", "posix", "nt", "pty", "socket", "shutil",
                          "ctypes", "pickle", "marshal", "runpy", "commands", "__builtins__"})
# Template globals that public sandbox escapes start from (Jinja's own and Flask's); no chat template needs them.
GADGET_GLOBALS = frozenset({"cycler", "joiner", "lipsum", "self", "config", "request", "url_for", "get_flashed_messages"})
_ATTRIBUTE_KWARG_FILTERS = frozenset({"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"})
_STRING_METHODS = frozenset({"format", "join", "replace", "lower", "upper", "strip", "title", "capitalize"})
_DUNDER = re.compile(r"__[A-Za-z]\w*__")  # a dunder name, not a line of underscores
_FORMAT_LOOKUP = re.compile(r"\{[^{}]*[.\[][^{}]*\}")  # "{0.attr}" / "{0[key]}": str.format looks attributes up
_PERCENT_ONLY = re.compile(r"%[sdc%]")


@dataclass
class Issue:
    severity: Severity
    construct: str
    detail: str
    line: int

    def as_evidence(self) -> dict:
        return {"line": self.line, "construct": self.construct, "detail": _short(self.detail, 160)}


def check_jinja_template(text: str, location: str) -> list[Finding]:
    """Parse one template (never render it) and report sandbox escapes (critical), constructs no chat template
    needs (high), or a clean summary (info). A template that does not parse is high: not inspected."""
    if not isinstance(text, str):
        return [not_inspected("Chat template", f"The template is a {type(text).__name__}, not a string.", location)]
    if len(text) > MAX_TEMPLATE_CHARS:
        return [not_inspected("Chat template", f"The template is {len(text):,} characters, over the "
                              f"{MAX_TEMPLATE_CHARS:,} poisonscan parses.", location, {"chars": len(text)})]
    try:
        tree = _environment().parse(text)
    except Exception as exc:  # noqa: BLE001 - TemplateSyntaxError, RecursionError on deep nesting, ...
        return [not_inspected("Chat template", f"The template does not parse as Jinja2 ({type(exc).__name__}: "
                              f"{_short(str(exc), 160)}); a renderer may still accept it.", location,
                              {"line": getattr(exc, "lineno", None)})]
    try:
        analysis = _Analysis(tree)
        analysis.run()
    except (_TooLarge, RecursionError):
        return [not_inspected("Chat template", f"The template is too large or too deeply nested to analyse (over "
                              f"{MAX_TEMPLATE_NODES:,} syntax nodes, or nesting beyond Python's recursion limit).", location)]
    return _findings(analysis, text, location)


def check_jinja_file(path) -> list[Finding]:
    """A standalone template file (*.jinja, chat_template.jinja)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > 4 * MAX_TEMPLATE_CHARS:
            return [not_inspected("Chat template", f"The file is {size:,} bytes, too large for a template.", path.name)]
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [not_inspected("Chat template", f"The file cannot be read as UTF-8 text ({type(exc).__name__}).", path.name)]
    return check_jinja_template(text, path.name)


def check_hf_json(path) -> list[Finding]:
    """tokenizer_config.json / chat_template.json / config.json: every chat template, and auto_map custom code."""
    path = Path(path)
    what = "Hugging Face JSON config"
    duplicates: list[str] = []
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return [not_inspected(what, f"The file is {size:,} bytes, over the JSON size poisonscan reads.", path.name)]
        config = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_json_pairs_with_duplicates(duplicates),
                            parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [not_inspected(what, f"The file does not parse as UTF-8 JSON ({type(exc).__name__}: {_short(str(exc), 160)}).",
                              path.name)]
    if not isinstance(config, dict):
        return [_finding(f"{what}: no chat template or custom code", Severity.info,
                         f"The JSON is a {type(config).__name__}, with no chat_template or auto_map.")]
    findings = _duplicate_findings(duplicates, path.name)
    findings += _auto_map_findings(config.get("auto_map"), path.name)
    templates = _chat_templates(config.get("chat_template"), path.name)
    for location, template in templates[:MAX_TEMPLATES_PER_FILE]:
        findings += check_jinja_template(template, location)
    if len(templates) > MAX_TEMPLATES_PER_FILE:
        findings.append(not_inspected(what, f"It has {len(templates)} chat templates; only the first "
                                      f"{MAX_TEMPLATES_PER_FILE} were checked.", path.name))
    findings.append(_finding(
        f"{what}: {len(templates)} chat template(s) checked", Severity.info,
        "auto_map present." if "auto_map" in config else "No auto_map (no custom Python code).",
        evidence={"keys": sorted(config)[:50], "chat_templates": [loc for loc, _ in templates][:50]}))
    return findings


def _chat_templates(value, name: str) -> list[tuple[str, object]]:
    """(location, template) pairs: transformers accepts a string or a list of {"name", "template"}."""
    if value is None:
        return []
    if isinstance(value, list):
        out = []
        for i, entry in enumerate(value):
            label = entry.get("name", i) if isinstance(entry, dict) else i
            out.append((f"{name}:chat_template[{_short(str(label), 60)}]",
                        entry.get("template") if isinstance(entry, dict) else entry))
        return out
    return [(f"{name}:chat_template", value)]  # a non-string is reported by check_jinja_template


def _auto_map_findings(auto_map, name: str) -> list[Finding]:
    if auto_map is None:
        return []
    entries = [{"auto_class": _short(str(k), 60), "code": _short(json.dumps(v), 200)}
               for k, v in (auto_map.items() if isinstance(auto_map, dict) else [("?", auto_map)])]
    other_repos = sorted({e["code"] for e in entries if "--" in e["code"]})
    return [_finding(
        "Config loads custom Python code (trust_remote_code)", Severity.high,
        "auto_map points transformers at Python classes shipped with the model (or in another repository"
        + (", as here" if other_repos else "") + "). Loading the model with trust_remote_code=True imports and "
        "runs that code; poisonscan does not review Python code.",
        "Review every referenced Python file by hand, pin the revision, or use a model supported natively by "
        "transformers; never enable trust_remote_code for unreviewed code.",
        {"location": name, "auto_map": _capped(entries), "other_repositories": other_repos[:10]})]


def _duplicate_findings(duplicates: list[str], name: str) -> list[Finding]:
    risky = sorted({d for d in duplicates if d in ("chat_template", "auto_map", "template")})
    if not risky:
        return []
    return [_finding(
        "Config repeats security-relevant keys", Severity.high,
        f"{', '.join(risky)} appear(s) more than once. JSON parsers disagree on which copy wins, so a reviewer and a "
        "model server can see different templates or code references.", _DO_NOT_LOAD,
        {"location": name, "duplicates": risky})]


# --------------------------------------------------------------------------------------------
# The AST analysis
# --------------------------------------------------------------------------------------------

class _TooLarge(Exception):
    pass


def _environment():
    import jinja2
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        """transformers' {% generation %}...{% endgeneration %} (assistant-token masks): parsed as its body."""
        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    # The extensions transformers enables (loopcontrols, generation) plus do, so real templates parse.
    return jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
                              extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", GenerationTag])


class _Analysis:
    def __init__(self, tree) -> None:
        from jinja2 import nodes

        self.nodes = nodes
        self.tree = tree
        self.issues: list[Issue] = []
        self.names: Counter = Counter()
        self.filters: Counter = Counter()
        self.count = 0
        self.assigned: dict[str, list] = {}  # {% set name = expr %}: constants propagate through names

    def run(self) -> None:
        n = self.nodes
        all_nodes = self._all_nodes()
        for node in all_nodes:
            if isinstance(node, n.Assign) and isinstance(node.target, n.Name):
                self.assigned.setdefault(node.target.name, []).append(node.node)
        stored = {x.name for x in all_nodes if isinstance(x, n.Name) and x.ctx in ("store", "param")}
        for node in all_nodes:
            self._check(node, stored)

    def _all_nodes(self) -> list:
        out, stack = [], [self.tree]
        while stack:
            node = stack.pop()
            self.count += 1
            if self.count > MAX_TEMPLATE_NODES:
                raise _TooLarge
            out.append(node)
            stack.extend(node.iter_child_nodes())
        return out

    def _issue(self, severity: Severity, construct: str, detail: str, node) -> None:
        self.issues.append(Issue(severity, construct, detail, getattr(node, "lineno", 0) or 0))

    def _check(self, node, stored: set) -> None:
        n = self.nodes
        if isinstance(node, n.Getattr):
            self._attribute_name(node.attr, "attribute", node)
            if isinstance(node.node, n.Name) and node.node.name in GADGET_GLOBALS and node.node.name not in stored:
                self._issue(Severity.critical, "gadget attribute", f"{node.node.name}.{node.attr}", node)
        elif isinstance(node, n.NSRef):
            self._attribute_name(node.attr, "namespace attribute", node)
        elif isinstance(node, n.Getitem):
            self._item(node)
        elif isinstance(node, n.Name):
            self._name(node, stored)
        elif isinstance(node, n.Keyword) and node.key.startswith("_"):
            self._issue(Severity.critical, "dunder keyword", f"keyword argument {node.key}", node)
        elif isinstance(node, n.Filter):
            self._filter(node)
        elif isinstance(node, n.Call):
            self._call(node)
        elif isinstance(node, (n.Include, n.Import, n.FromImport, n.Extends)):
            self._issue(Severity.high, type(node).__name__.lower(), "loads another template through the renderer's loader", node)
        elif isinstance(node, n.Mul):
            count = node.right.value if isinstance(node.right, n.Const) else None
            if isinstance(count, int) and not isinstance(count, bool) and count > 1_000_000:
                self._issue(Severity.high, "huge repetition", f"repeats a value {count:,} times", node)
        if isinstance(node, n.Const) and isinstance(node.value, str) and _DUNDER.search(node.value):
            self._issue(Severity.critical, "dunder string", f"string constant {node.value!r}", node)
        elif isinstance(node, (n.Concat, n.Add, n.Mul, n.Mod, n.Filter, n.Call, n.Getitem)):
            built = self._fold(node)
            if isinstance(built, str) and _DUNDER.search(built):
                self._issue(Severity.critical, "built dunder name", f"an expression builds {built!r}", node)
        self._char_extraction(node)

    def _attribute_name(self, attr: str, construct: str, node) -> None:
        if attr.startswith("_"):
            self._issue(Severity.critical, construct, f"reads {attr}, a private or dunder attribute", node)
        elif attr in ESCAPE_ATTRIBUTES:
            self._issue(Severity.critical, construct, f"reads {attr}, which leads to Python internals", node)

    def _item(self, node) -> None:
        n = self.nodes
        if isinstance(node.arg, n.Slice):
            return
        key = self._fold(node.arg)
        if isinstance(key, str) and key.startswith("__"):  # a dict may have "_id"; "__class__" falls back to getattr
            self._issue(Severity.critical, "item", f"looks up {key}, a dunder name", node)
        elif self._builds_string(node.arg):
            self._issue(Severity.high, "computed item name", "an item looked up by a name computed at render time", node)

    def _name(self, node, stored: set) -> None:
        if node.ctx != "load":
            return
        self.names[node.name] += 1
        if node.name in stored:
            return
        if node.name.startswith("__") or node.name in MODULE_NAMES:
            self._issue(Severity.critical, "dangerous name", f"refers to {node.name}", node)
        elif node.name in GADGET_GLOBALS:
            self._issue(Severity.high, "template global", f"uses {node.name}, the starting point of known sandbox escapes", node)

    def _filter(self, node) -> None:
        n = self.nodes
        self.filters[node.name] += 1
        if node.name == "attr":
            name = self._fold(node.args[0]) if node.args else None
            if isinstance(name, str):
                self._attribute_name(name, "attr filter", node)
            else:
                self._issue(Severity.critical, "attr filter", "|attr() with a name computed at render time", node)
        if node.name in _ATTRIBUTE_KWARG_FILTERS:
            for kw in node.kwargs:
                if kw.key == "attribute":
                    name = self._fold(kw.value)
                    if isinstance(name, str):
                        for part in name.split("."):
                            self._attribute_name(part, f"{node.name} filter", node)
                    elif not isinstance(kw.value, n.Const):
                        self._issue(Severity.high, f"{node.name} filter", "attribute name computed at render time", node)

    def _call(self, node) -> None:
        n = self.nodes
        callee = node.node.name if isinstance(node.node, n.Name) else node.node.attr if isinstance(node.node, n.Getattr) else None
        if callee in DANGEROUS_CALLEES:
            self._issue(Severity.critical, "dangerous call", f"calls {callee}()", node)
        if callee == "range":
            for arg in node.args:
                if isinstance(arg, n.Const) and isinstance(arg.value, int) and arg.value > _MAX_RANGE:
                    self._issue(Severity.high, "huge range", f"range({arg.value:,}) exhausts the renderer", node)
        if callee in ("format", "format_map") and isinstance(node.node, n.Getattr):
            template = self._fold(node.node.node)
            if isinstance(template, str) and _FORMAT_LOOKUP.search(template):
                self._issue(Severity.critical, "format lookup", f"{template!r}.format() looks attributes up", node)

    def _char_extraction(self, node) -> None:
        """(x|string)[24], (x|string|list).pop(24), x|string|first: how payloads pick "_" out of an object's repr
        to build names the sandbox would refuse as literals."""
        n = self.nodes
        source = None
        if isinstance(node, n.Getitem) and isinstance(node.arg, n.Const) and isinstance(node.arg.value, int):
            source = node.node
        elif (isinstance(node, n.Call) and isinstance(node.node, n.Getattr) and node.node.attr == "pop"
              and node.args and isinstance(node.args[0], n.Const) and isinstance(node.args[0].value, int)):
            source = node.node.node
        elif isinstance(node, n.Filter) and node.name in ("first", "last", "batch", "slice", "random"):
            source = node.node
        while isinstance(source, n.Filter) and source.name == "list":
            source = source.node
        if isinstance(source, n.Filter) and source.name == "string" and not isinstance(source.node, n.Const):
            self._issue(Severity.high, "character extraction", "picks characters out of an object's text representation", node)

    def _builds_string(self, node) -> bool:
        """Whether an expression concatenates, formats or joins strings (iterative: trees can be deep)."""
        n = self.nodes
        stack, visited = [node], 0
        while stack and visited < MAX_TEMPLATE_NODES:
            x = stack.pop()
            visited += 1
            if isinstance(x, n.Concat) or (isinstance(x, n.Filter) and x.name in ("join", "format", "string", "reverse")):
                return True
            if isinstance(x, (n.Add, n.Mod)) and any(isinstance(o, n.Const) and isinstance(o.value, str) for o in (x.left, x.right)):
                return True  # string + / %, not messages[loop.index0 + 1]
            stack.extend(x.iter_child_nodes())
        return False

    def _fold(self, node, depth: int = 0):
        """The string (or int) an expression of constants evaluates to, or None. Never renders anything: only
        concatenation, repetition, %-formatting and a few pure string filters and methods are followed."""
        if depth > 32:
            return None
        n, fold = self.nodes, lambda x: self._fold(x, depth + 1)
        value = None
        if isinstance(node, n.Const) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
            value = node.value
        elif isinstance(node, n.Name) and len(self.assigned.get(node.name, ())) == 1:
            value = fold(self.assigned[node.name][0])
        elif isinstance(node, n.Concat):
            parts = [fold(x) for x in node.nodes]
            value = "".join(str(p) for p in parts) if all(p is not None for p in parts) else None
        elif isinstance(node, n.Add):
            left, right = fold(node.left), fold(node.right)
            value = left + right if isinstance(left, str) and isinstance(right, str) else None
        elif isinstance(node, n.Mul):
            left, right = fold(node.left), fold(node.right)
            if isinstance(left, int) and isinstance(right, str):
                left, right = right, left
            value = left * right if isinstance(left, str) and isinstance(right, int) and len(left) * right <= _MAX_FOLD_CHARS else None
        elif isinstance(node, n.Mod):
            value = _percent(fold(node.left), self._fold_items(node.right, depth + 1))
        elif isinstance(node, n.Filter):
            value = self._fold_filter(node, depth + 1)
        elif isinstance(node, n.Call) and isinstance(node.node, n.Getattr) and node.node.attr in _STRING_METHODS:
            value = self._fold_method(node, depth + 1)
        elif isinstance(node, n.Getitem) and isinstance(node.arg, n.Slice):
            value = self._fold_slice(node, depth + 1)
        return value if not isinstance(value, str) or len(value) <= _MAX_FOLD_CHARS else None

    def _fold_items(self, node, depth: int):
        n = self.nodes
        items = node.items if isinstance(node, (n.List, n.Tuple)) else [node]
        values = [self._fold(x, depth) for x in items]
        return None if any(v is None for v in values) else values

    def _fold_filter(self, node, depth: int):
        args = [self._fold(a, depth) for a in node.args]
        if node.name == "join":
            items = self._fold_items(node.node, depth) if isinstance(node.node, (self.nodes.List, self.nodes.Tuple)) else None
            if items is None:
                subject = self._fold(node.node, depth)
                items = list(subject) if isinstance(subject, str) else None
            sep = args[0] if args else ""
            return sep.join(map(str, items)) if items is not None and isinstance(sep, str) else None
        subject = self._fold(node.node, depth)
        if node.name == "format":
            return _percent(subject, args if None not in args else None)
        if not isinstance(subject, str) or None in args:
            return None
        simple = {"reverse": subject[::-1], "lower": subject.lower(), "upper": subject.upper(), "string": subject,
                  "trim": subject.strip(), "title": subject.title(), "capitalize": subject.capitalize()}
        if node.name in simple:
            return simple[node.name]
        if node.name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
            return subject.replace(args[0], args[1])
        return None

    def _fold_method(self, node, depth: int):
        method = node.node.attr
        subject = self._fold(node.node.node, depth)
        if method == "join":
            items = self._fold_items(node.args[0], depth) if len(node.args) == 1 else None
            return subject.join(map(str, items)) if isinstance(subject, str) and items is not None else None
        args = [self._fold(a, depth) for a in node.args]
        if not isinstance(subject, str) or None in args:
            return None
        if method == "format":
            return re.sub(r"\{\d*\}", lambda m, it=iter(args): str(next(it, "")), subject) if not _FORMAT_LOOKUP.search(subject) else None
        if method == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
            return subject.replace(args[0], args[1])
        return {"lower": subject.lower(), "upper": subject.upper(), "strip": subject.strip(), "title": subject.title(),
                "capitalize": subject.capitalize()}.get(method)

    def _fold_slice(self, node, depth: int):
        subject = self._fold(node.node, depth)
        s = node.arg
        bounds = [None if x is None else self._fold(x, depth) for x in (s.start, s.stop, s.step)]
        if not isinstance(subject, str) or any(b is not None and not isinstance(b, int) for b in bounds):
            return None
        if bounds[2] == 0:
            return None
        return subject[bounds[0]:bounds[1]:bounds[2]]


def _percent(template, args):
    """``template % args`` for constants only, and only %s/%d/%c (no widths: "%999999999s" would be a bomb)."""
    if not isinstance(template, str) or args is None:
        return None
    if _PERCENT_ONLY.sub("", template).count("%"):
        return None
    try:
        return template % tuple(args)
    except (TypeError, ValueError, OverflowError):
        return None


def _findings(analysis: _Analysis, text: str, location: str) -> list[Finding]:
    issues = sorted(analysis.issues, key=lambda i: i.line)
    critical = [i for i in issues if i.severity == Severity.critical]
    high = [i for i in issues if i.severity == Severity.high]
    findings = []
    if critical:
        findings.append(_finding(
            "Chat template escapes the Jinja sandbox (server-side template injection)", Severity.critical,
            "The template reaches Python internals: dunder attributes, names built to dodge filters, template "
            "globals or calls that run commands. Rendering it in a server that formats chat prompts with Jinja "
            "(llama-cpp-python before 0.2.72, CVE-2024-34359, and relatives) runs code on that server.",
            _DO_NOT_LOAD + " Replace the chat template with the publisher's original.",
            {"location": location, "issues": _capped([i.as_evidence() for i in critical])}))
    if high:
        findings.append(_finding(
            "Chat template uses constructs no chat template needs", Severity.high,
            "The template uses template globals, loads other templates, computes names at render time or "
            "exhausts the renderer. These are building blocks of sandbox escapes and denial of service.",
            "Review the template line by line, or replace it with the publisher's original.",
            {"location": location, "issues": _capped([i.as_evidence() for i in high])}))
    if not findings:
        findings.append(_finding(
            "Chat template parsed: no sandbox-escape constructs", Severity.info,
            f"{len(text):,} characters, {analysis.count:,} syntax nodes, checked without rendering.",
            evidence={"location": location, "variables": dict(analysis.names.most_common(20)),
                      "filters": dict(analysis.filters.most_common(20))}))
    return findings
