"""ONNX: the ModelProto parsed with the protobuf parser only (external data never loaded)."""

import os
from collections import Counter
from pathlib import Path, PurePosixPath

from worker.findings import Finding, Severity
from worker.inspect.common import (
    _DO_NOT_LOAD,
    _URL,
    _WIN_ABS,
    MAX_LISTED,
    MAX_ONNX_BYTES,
    MAX_ONNX_NODES,
    _capped,
    _finding,
    _short,
)

# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

STANDARD_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})


def _location_escapes(location: str) -> bool:
    loc = location.replace("\\", "/")
    return (not loc or loc.startswith(("/", "~")) or bool(_WIN_ABS.match(location)) or bool(_URL.match(location))
            or ".." in PurePosixPath(loc).parts or "\x00" in loc or os.path.isabs(location))


def check_onnx(path) -> list[Finding]:
    """Parse an ONNX ModelProto (external data never loaded) and flag escaping external data and custom ops."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [_finding("ONNX model could not be parsed", Severity.high, f"The file cannot be read ({exc}).", _DO_NOT_LOAD)]
    if size > MAX_ONNX_BYTES:
        return [_finding("ONNX model could not be parsed", Severity.high,
                         f"The file is {size} bytes, beyond the 2 GiB protobuf limit; a valid ONNX model keeps large "
                         "weights in external data files.", _DO_NOT_LOAD, {"file_size": size})]
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, RuntimeError, ValueError...
        return [_finding("ONNX model could not be parsed", Severity.high,
                         f"The file does not parse as an ONNX protobuf ({exc.__class__.__name__}: {_short(str(exc))}). "
                         "It is corrupt, truncated or not an ONNX model.", _DO_NOT_LOAD, {"file_size": size})]
    if model.ir_version <= 0 or not model.HasField("graph"):
        return [_finding("ONNX model could not be parsed", Severity.high,
                         "The bytes parse as protobuf but carry no IR version or graph, so this is not a usable ONNX "
                         "model (protobuf accepts many arbitrary byte strings).", _DO_NOT_LOAD,
                         {"file_size": size, "ir_version": model.ir_version})]

    from onnx import AttributeProto, TensorProto

    local_functions = {(fn.domain, fn.name) for fn in model.functions}
    external, escaping, custom_ops = [], [], Counter()
    node_count = 0
    truncated = False

    def tensor(t, where):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            entry = {k.key: _short(k.value) for k in t.external_data}
            entry = {"tensor": _short(t.name, 100), "where": where, **{k: entry[k] for k in ("location", "offset", "length") if k in entry}}
            loc = next((k.value for k in t.external_data if k.key == "location"), "")
            (escaping if _location_escapes(loc) else external).append(entry)

    # Iterative walk over the main graph, every subgraph and every function body.
    graphs = [(model.graph, "graph")] + [(fn, f"function {fn.domain}:{fn.name}") for fn in model.functions]
    while graphs:
        g, where = graphs.pop()
        for t in getattr(g, "initializer", ()):
            tensor(t, f"{where} initializer")
        for st in getattr(g, "sparse_initializer", ()):
            tensor(st.values, f"{where} sparse initializer")
            tensor(st.indices, f"{where} sparse initializer")
        for node in g.node:
            node_count += 1
            if node_count > MAX_ONNX_NODES:
                truncated = True
                graphs.clear()
                break
            if node.domain not in STANDARD_ONNX_DOMAINS and (node.domain, node.op_type) not in local_functions:
                custom_ops[(node.domain, node.op_type)] += 1
            for a in node.attribute:
                nw = f"{where} node {_short(node.name or node.op_type, 60)}"
                if a.type == AttributeProto.TENSOR:
                    tensor(a.t, nw)
                elif a.type == AttributeProto.TENSORS:
                    for t in a.tensors:
                        tensor(t, nw)
                elif a.type == AttributeProto.SPARSE_TENSOR:
                    tensor(a.sparse_tensor.values, nw)
                    tensor(a.sparse_tensor.indices, nw)
                elif a.type == AttributeProto.GRAPH:
                    graphs.append((a.g, f"{nw}.{a.name}"))
                elif a.type == AttributeProto.GRAPHS:
                    graphs.extend((sg, f"{nw}.{a.name}[{i}]") for i, sg in enumerate(a.graphs))

    findings: list[Finding] = []
    if escaping:
        findings.append(_finding(
            "ONNX external data escapes the model folder", Severity.critical,
            f"{len(escaping)} tensor(s) load their bytes from an absolute path, a URL or a path that climbs out of the "
            "model's folder with '..'. A runtime loading this model reads arbitrary files from the host (for example "
            "/etc/passwd or credentials) into the model, where they can be exfiltrated through its outputs.",
            _DO_NOT_LOAD + " Never load it with external data enabled.", {"tensors": _capped(escaping)}))
    if external:
        findings.append(_finding(
            "ONNX model references external data files", Severity.low,
            f"{len(external)} tensor(s) keep their bytes in files next to the model. Those files were not scanned and "
            "must come from the same trusted source.",
            "Scan and hash the external data files along with the model.",
            {"tensors": _capped(external), "files": sorted({e.get("location", "") for e in external})[:MAX_LISTED]}))
    if custom_ops:
        ops = [{"domain": d, "op_type": o, "count": c} for (d, o), c in sorted(custom_ops.items())]
        findings.append(_finding(
            "ONNX model uses custom operator domains", Severity.medium,
            f"Nodes use operators from non-standard domains ({', '.join(sorted({d for d, _ in custom_ops})[:10])}). "
            "Running them needs a native plugin library (or a runtime's contrib ops) whose code this scan cannot "
            "inspect; a custom op can implement anything, including a backdoor.",
            "Confirm each domain is expected (e.g. com.microsoft contrib ops from ONNX Runtime) and load custom-op "
            "libraries only from trusted, pinned sources.", {"ops": _capped(ops)}))
    custom_fns = [{"domain": fn.domain, "name": fn.name, "nodes": len(fn.node)} for fn in model.functions
                  if fn.domain not in STANDARD_ONNX_DOMAINS]
    if custom_fns:
        findings.append(_finding(
            "ONNX model defines functions in custom domains", Severity.medium,
            f"The model defines {len(custom_fns)} function(s) in non-standard domains. They are built from ONNX ops "
            "(checked above) but can re-define what an op name means inside this model, which hides logic from "
            "reviewers.", "Review the function bodies (for example with Netron) before deploying.",
            {"functions": _capped(custom_fns)}))
    if truncated:
        findings.append(_finding(
            "ONNX model could not be fully inspected", Severity.high,
            f"The model has more than {MAX_ONNX_NODES:,} nodes; the rest were not checked.",
            "Treat the model as unverified.", {"node_limit": MAX_ONNX_NODES}))
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    findings.append(_finding(
        f"ONNX model: {node_count} nodes", Severity.info,
        f"IR version {model.ir_version}, {node_count} nodes, {len(model.graph.initializer)} initializers, "
        f"{len(model.functions)} local functions"
        + (". No escaping external data or custom operators found." if not findings else "."),
        evidence={"ir_version": model.ir_version, "producer": _short(model.producer_name, 100),
                  "producer_version": _short(model.producer_version, 40), "opsets": dict(list(opsets.items())[:MAX_LISTED]),
                  "node_count": node_count, "initializers": len(model.graph.initializer),
                  "local_functions": len(model.functions)}))
    return findings


