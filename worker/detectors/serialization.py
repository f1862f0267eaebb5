"""Supply chain: static scan of pickle-based serialization, through every container layer.

Maps to AML.T0010 (ML Supply Chain Compromise); code that runs on load can also plant a
backdoor (AML.T0018), which the critical findings say.
"""

from collections import defaultdict

from worker.inspect.archives import ContainerScan, Limits, Walker
from worker.findings import Finding, InputFile, ScanInputs, Severity
from worker.registry import registry

PICKLE_KINDS_HINT = "Prefer safetensors for weights (or Keras .keras loaded in safe mode); load pickles only from publishers you trust."


@registry.register(name="unsafe_serialization", layer="supply_chain", technique="AML.T0010")
def unsafe_serialization(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Statically scans every pickle stream, recursively through archives, against an allowlist of globals.

    config: ``allow_pickle`` (bool, default false): a clean pickle-based file is info instead of medium.
    """
    limits = Limits(**config.get("limits", {}))
    findings = []
    for f in inputs.files:
        scan = Walker(limits).scan_file(f.path)
        findings += findings_for(f, scan, allow_pickle=bool(config.get("allow_pickle", False)))
    return findings


def findings_for(f: InputFile, scan: ContainerScan, allow_pickle: bool) -> list[Finding]:
    dangerous, unknown, safe = defaultdict(list), defaultdict(list), set()
    for hit in scan.pickles:
        for g in hit.analysis.globals:
            where = {"location": hit.location, "offset": g.offset, "opcode": g.opcode, "called": g.called}
            if g.verdict == "dangerous":
                dangerous[g.qualified].append(where)
            elif g.verdict == "unknown":
                unknown[g.qualified].append(where)
            else:
                safe.add(g.qualified)
    out = [_dangerous(f, name, places) for name, places in sorted(dangerous.items())]
    if unknown:
        out.append(_unknown(f, unknown))
    out += [_broken(f, hit) for hit in scan.pickles if hit.analysis.errors]
    out += [
        Finding(f"{f.role}: {p.title}", Severity(p.severity), 0.7 if p.severity == "high" else 0.5,
                f"{p.detail} A scan that cannot see everything cannot vouch for it.",
                "Repackage the artifact without the problem (plain, uncompressed, un-nested) and scan it again.",
                evidence={"location": p.location})
        for p in scan.problems
    ]
    expected = [h for h in scan.pickles if h.expected]
    if expected and not dangerous:
        out.append(Finding(
            f"{f.role} uses pickle serialization",
            Severity.info if allow_pickle else Severity.medium,
            0.3,
            f"{len(expected)} pickle stream(s) found; every global they import is on the allowlist of functions needed to rebuild "
            "weights. Pickle still runs whatever it names when loaded, so a later edit of this file could run code.",
            PICKLE_KINDS_HINT + " Set detector_config.unsafe_serialization.allow_pickle=true to accept clean pickles.",
            evidence={"pickle_locations": [h.location for h in expected], "allowlisted_globals": sorted(safe)},
        ))
    out.append(Finding(
        f"{f.role} serialization scanned",
        Severity.info,
        0.0,
        f"Content kind {scan.kind}; {len(scan.pickles)} pickle stream location(s), {len(scan.containers)} container(s), "
        f"{scan.bytes_read} bytes read. Nothing was loaded or executed.",
        evidence={"kind": scan.kind, "containers": scan.containers[:100], "pickle_locations": [h.location for h in scan.pickles][:100]},
    ))
    return out


def _dangerous(f: InputFile, name: str, places: list[dict]) -> Finding:
    called = any(p["called"] for p in places)
    return Finding(
        title=f"{f.role} pickle imports {name}" + (" and calls it" if called else ""),
        severity=Severity.critical,
        score=1.0 if called else 0.9,
        explanation=f"Loading this file imports {name}, a function that can run code, touch files or processes, or reach the "
        "network. Unpickling runs it with arguments chosen by whoever wrote the file: arbitrary code execution on the machine "
        "that loads the model, which can also plant a backdoor (ATLAS AML.T0018).",
        remediation="Do not load this file. Quarantine it, find out where it came from, and obtain the weights as safetensors "
        "from a trusted publisher.",
        evidence={"global": name, "occurrences": places[:50]},
    )


def _unknown(f: InputFile, unknown: dict[str, list[dict]]) -> Finding:
    names = sorted(unknown)
    return Finding(
        title=f"{f.role} pickle imports {len(names)} global(s) outside the allowlist",
        severity=Severity.medium,
        score=0.6,
        explanation="These imports are not known to be needed to rebuild model weights: " + ", ".join(names[:20])
        + (" ..." if len(names) > 20 else "") + ". They run code from those modules when the file is loaded.",
        remediation="Review each import; if they are your own classes, load the file only in an isolated environment, or "
        "convert the weights to safetensors.",
        evidence={"globals": {n: unknown[n][:10] for n in names[:200]}},
    )


def _broken(f: InputFile, hit) -> Finding:
    seen = [g.qualified for g in hit.analysis.globals]
    return Finding(
        title=f"{f.role} pickle at {hit.location} cannot be parsed to the end",
        severity=Severity.medium,
        score=0.6,
        explanation="The pickle stream breaks before its end. Python's unpickler runs every instruction before the break, so a "
        "payload placed before deliberate damage still runs, while some scanners give up there. Globals seen before the break: "
        + (", ".join(seen[:20]) or "none") + ".",
        remediation="Treat a damaged pickle as hostile: do not load it; obtain a clean copy.",
        evidence={"errors": hit.analysis.errors[:10], "globals_before_break": seen[:100]},
    )
