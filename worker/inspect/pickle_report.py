"""Turn a container walk (every pickle stream and every problem found in a file) into findings.

Allowlist first: a global a pickle calls or hands out that is not allowlisted is ``high`` (the gate
fails); the danger list only makes the explanation sharper (``critical``). A pickle that cannot be
parsed to its end was not understood: ``high``.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from worker.findings import Finding, Severity
from worker.inspect.archives import ContainerScan

PICKLE_HINT = "Prefer safetensors for weights (or Keras .keras loaded in safe mode); load pickles only from publishers you trust."


@dataclass(frozen=True)
class UserAllowlist:
    """Globals a user (per scan or per tenant) accepts: ``module.name`` exactly, or ``module.*`` for a whole module
    (a wildcard never admits a global on the danger list; an exact entry does, and the report says so)."""

    entries: tuple[str, ...] = ()

    def entry_for(self, qualified: str, verdict: str) -> str | None:
        if qualified in self.entries:
            return qualified
        if verdict == "dangerous":
            return None
        module = qualified.rsplit(".", 1)[0]
        for entry in self.entries:
            if entry.endswith(".*") and (module == entry[:-2] or module.startswith(entry[:-1])):
                return entry
        return None


@dataclass
class _Globals:
    dangerous: dict = field(default_factory=lambda: defaultdict(list))
    unknown: dict = field(default_factory=lambda: defaultdict(list))
    safe: set = field(default_factory=set)
    user_allowed: dict = field(default_factory=lambda: defaultdict(set))  # entry -> globals it allowed


def pickle_findings(scan: ContainerScan, allowlist: UserAllowlist, allow_pickle: bool) -> list[Finding]:
    seen = _sort_globals(scan, allowlist)
    out = [_dangerous(name, places) for name, places in sorted(seen.dangerous.items())]
    called = {n: p for n, p in seen.unknown.items() if any(x["called"] for x in p)}
    imported = {n: p for n, p in seen.unknown.items() if n not in called}
    if called:
        out.append(_unknown(called, calls=True))
    if imported:
        out.append(_unknown(imported, calls=False))
    out += [_broken(hit) for hit in scan.pickles if hit.analysis.errors]
    out += [_problem(p) for p in scan.problems]
    if seen.user_allowed:
        out.append(Finding(
            "pickle globals allowed by your allowlist", Severity.info, 0.0,
            "These globals are outside poisonscan's allowlist and were accepted by entries of "
            "detector_config.unsafe_serialization.allow_globals: "
            + "; ".join(f"{e} allowed {', '.join(sorted(g)[:10])}" for e, g in sorted(seen.user_allowed.items())) + ".",
            evidence={"allowed_by": {e: sorted(g) for e, g in sorted(seen.user_allowed.items())}}))
    expected = [h for h in scan.pickles if h.expected]
    if expected and not seen.dangerous and not seen.unknown:
        out.append(Finding(
            "uses pickle serialization", Severity.info if allow_pickle else Severity.medium, 0.3,
            f"{len(expected)} pickle stream(s) found; every global they import is on the allowlist of functions needed to "
            "rebuild weights. Pickle still runs whatever it names when loaded, so a later edit of this file could run code.",
            PICKLE_HINT + " Set detector_config.unsafe_serialization.allow_pickle=true to accept clean pickles.",
            evidence={"pickle_locations": [h.location for h in expected][:100], "allowlisted_globals": sorted(seen.safe)}))
    return out


def _sort_globals(scan: ContainerScan, allowlist: UserAllowlist) -> _Globals:
    seen = _Globals()
    for hit in scan.pickles:
        for g in hit.analysis.globals:
            where = {"location": hit.location, "offset": g.offset, "opcode": g.opcode, "called": g.called}
            verdict = g.verdict
            if verdict != "safe" and not g.dynamic and (entry := allowlist.entry_for(g.qualified, verdict)):
                seen.user_allowed[entry].add(g.qualified)
            elif verdict == "dangerous":
                seen.dangerous[g.qualified].append(where)
            elif verdict == "unknown":
                seen.unknown[g.qualified].append(where)
            else:
                seen.safe.add(g.qualified)
    return seen


def _dangerous(name: str, places: list[dict]) -> Finding:
    called = any(p["called"] for p in places)
    return Finding(
        title=f"pickle imports {name}" + (" and calls it" if called else ""),
        severity=Severity.critical,
        score=1.0 if called else 0.9,
        explanation=f"Loading this file imports {name}, a function that can run code, touch files or processes, or reach the "
        "network. Unpickling runs it with arguments chosen by whoever wrote the file: arbitrary code execution on the machine "
        "that loads the model, which can also plant a backdoor (ATLAS AML.T0018).",
        remediation="Do not load this file. Quarantine it, find out where it came from, and obtain the weights as safetensors "
        "from a trusted publisher.",
        evidence={"global": name, "occurrences": places[:50]},
    )


def _unknown(unknown: dict[str, list[dict]], calls: bool) -> Finding:
    names = sorted(unknown)
    listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    if calls:
        return Finding(
            title=f"pickle calls {len(names)} global(s) outside the allowlist",
            severity=Severity.high, score=0.85,
            explanation=f"Loading this file calls {listed}. None of them is known to be needed to rebuild weights, so "
            "poisonscan cannot tell what they do with arguments chosen by the file's author; new code-execution gadgets in "
            "torch, numpy and the standard library are found every year, so an unknown call is treated as unsafe.",
            remediation="Do not load this file unless you know every listed function. If they are your own classes or a "
            "library's you trust, allow them per scan or per tenant with detector_config.unsafe_serialization.allow_globals "
            "(e.g. [\"mypackage.models.*\"]); better, convert the weights to safetensors.",
            evidence={"globals": {n: unknown[n][:10] for n in names[:200]}, "called": True},
        )
    return Finding(
        title=f"pickle imports {len(names)} global(s) outside the allowlist (not called while loading)",
        severity=Severity.high, score=0.75,
        explanation=f"These imports are not known to be needed to rebuild model weights: {listed}. The pickle does not call "
        "them while loading, but it hands them to whoever uses the loaded object (a config whose 'callback' is a function "
        "gets called later), and importing a module runs its import-time code.",
        remediation="Do not load this file unless you know every listed object; allow your own with "
        "detector_config.unsafe_serialization.allow_globals, or convert the weights to safetensors.",
        evidence={"globals": {n: unknown[n][:10] for n in names[:200]}, "called": False},
    )


def _broken(hit) -> Finding:
    seen = [g.qualified for g in hit.analysis.globals]
    return Finding(
        title=f"pickle at {hit.location} cannot be parsed to the end: not inspected, treated as unsafe",
        severity=Severity.high,
        score=0.8,
        explanation="The pickle stream breaks before its end. Python's unpickler runs every instruction before the break, and "
        "a loader may read past damage this scan could not follow, so the rest of the stream was not understood. Globals "
        "seen before the break: " + (", ".join(seen[:20]) or "none") + ".",
        remediation="Treat a damaged pickle as hostile: do not load it; obtain a clean copy.",
        evidence={"errors": hit.analysis.errors[:10], "globals_before_break": seen[:100]},
    )


def _problem(p) -> Finding:
    return Finding(
        p.title, Severity(p.severity), 0.8 if p.severity in ("high", "critical") else 0.5,
        f"{p.detail} A scan that cannot see everything cannot vouch for it.",
        "Repackage the artifact without the problem (plain, uncompressed, un-nested) and scan it again.",
        evidence={"location": p.location})
