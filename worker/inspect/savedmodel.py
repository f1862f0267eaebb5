"""TensorFlow SavedModel / GraphDef protobufs: identified by structure and walked field by field to collect
every op the graph and its function library run, without TensorFlow."""

import mmap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from worker.findings import Finding, Severity
from worker.inspect.common import _DO_NOT_LOAD, Problem, _capped, _finding, _short, not_inspected
from worker.inspect.protobuf import LEN, VARINT, Budget, ProtobufError, ProtobufLimit, as_text, iter_fields, iter_stream_fields

# TensorFlow ops that touch the file system or call back into Python when a graph runs.
# SaveV2/RestoreV2 are left out: every SavedModel has them to load its own variables.
TF_FILE_OPS = ("ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "WholeFileReader", "WholeFileReaderV2",
               "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReaderV2", "TFRecordReaderV2", "LMDBReader",
               "TextLineDataset", "TFRecordDataset", "FixedLengthRecordDataset", "PrintV2", "DebugIdentityV2")
TF_PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")

MAX_TF_GRAPH_BYTES = 2 * 1024**3  # protobuf's own limit: TensorFlow cannot load a larger graph either
MAX_TF_FIELDS = 100_000_000  # protobuf fields visited in one graph
MAX_TF_NODES = 5_000_000
# Files TensorFlow writes next to saved_model.pb that are not graphs.
TF_AUXILIARY_PROTOS = frozenset({"fingerprint.pb", "keras_metadata.pb"})

# Field numbers (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto, framework/graph.proto, function.proto)
_SAVED_MODEL = {1: VARINT, 2: LEN}  # saved_model_schema_version, meta_graphs
_GRAPH_DEF = {1: LEN, 2: LEN, 3: VARINT, 4: LEN, 5: LEN}  # node, library, version (deprecated), versions, debug_info
_NODE_DEF = {1: LEN, 2: LEN, 3: LEN, 4: LEN, 5: LEN, 6: LEN, 7: LEN}  # name, op, input, device, attr, debug info, type
_META_GRAPH_GRAPH_DEF = 2
_LIBRARY_FUNCTION, _FUNCTION_SIGNATURE, _FUNCTION_NODE_DEF = 1, 1, 3


class NotATensorFlowGraph(ProtobufError):
    """Well-formed or not, the bytes are not shaped like a SavedModel or a GraphDef."""


@dataclass
class TFGraph:
    kind: str  # "SavedModel" | "GraphDef"
    ops: Counter = field(default_factory=Counter)
    nodes: int = 0
    functions: int = 0
    meta_graphs: int = 0
    schema_version: int | None = None


def parse_tf_graph(data) -> TFGraph:
    """Walk a SavedModel or a bare GraphDef; raise ProtobufError (NotATensorFlowGraph when it is neither)."""
    if not len(data):
        raise NotATensorFlowGraph("no bytes")
    errors = []
    for kind, walk in (("SavedModel", _walk_saved_model), ("GraphDef", _walk_graph_def)):
        graph = TFGraph(kind)
        try:
            walk(data, graph, Budget(MAX_TF_FIELDS))
            return graph
        except ProtobufLimit:
            raise
        except ProtobufError as exc:
            errors.append(f"as a {kind}: {exc}")
    raise NotATensorFlowGraph("; ".join(errors))


def _fields(data, shape: dict, budget: Budget, strict: bool):
    """Fields of a message whose known fields must have their wire types; unknown ones are refused when ``strict``
    (the top level, where the shape is what identifies the message) and skipped otherwise (newer TF versions)."""
    for f in iter_fields(data, budget=budget):
        expected = shape.get(f.number)
        if expected is None and strict:
            raise NotATensorFlowGraph(f"unexpected top-level field {f.number}")
        if expected is not None and f.wire_type != expected:
            raise ProtobufError(f"field {f.number} has wire type {f.wire_type}, expected {expected}")
        if expected is not None:
            yield f


def _walk_saved_model(data, graph: TFGraph, budget: Budget) -> None:
    for f in _fields(data, _SAVED_MODEL, budget, strict=True):
        if f.number == 1:
            graph.schema_version = f.value
        else:
            graph.meta_graphs += 1
            for g in _fields(f.value, {_META_GRAPH_GRAPH_DEF: LEN}, budget, strict=False):
                _walk_graph_def(g.value, graph, budget, strict=False)
    if not graph.meta_graphs:
        raise NotATensorFlowGraph("no MetaGraphDef")


def _walk_graph_def(data, graph: TFGraph, budget: Budget, strict: bool = True) -> None:
    seen = False
    for f in _fields(data, _GRAPH_DEF, budget, strict):
        seen = True
        if f.number == 1:
            _node(f.value, graph, budget)
        elif f.number == 2:
            for fn in _fields(f.value, {_LIBRARY_FUNCTION: LEN}, budget, strict=False):
                _function(fn.value, graph, budget)
    if strict and not (graph.nodes or graph.functions):
        raise NotATensorFlowGraph("no nodes and no functions" if seen else "no fields")


def _function(data, graph: TFGraph, budget: Budget) -> None:
    graph.functions += 1
    for f in _fields(data, {_FUNCTION_SIGNATURE: LEN, _FUNCTION_NODE_DEF: LEN}, budget, strict=False):
        if f.number == _FUNCTION_NODE_DEF:
            _node(f.value, graph, budget)


def _node(data, graph: TFGraph, budget: Budget) -> None:
    graph.nodes += 1
    if graph.nodes > MAX_TF_NODES:
        raise ProtobufLimit(f"more than {MAX_TF_NODES:,} nodes")
    op = ""
    for f in _fields(data, {2: LEN}, budget, strict=False):
        op = as_text(f.value)
    if not op:
        raise ProtobufError("a node has no op")  # TensorFlow refuses such a graph
    graph.ops[op] += 1


def looks_like_tf_graph(f, size: int) -> bool:
    """Cheap identification for sniffing: the top-level fields (seeked over, never read whole) have the shape of a
    SavedModel or a GraphDef, and the first bytes of their messages parse as MetaGraphDefs or NodeDefs with ops."""
    fields = []
    try:
        for sf in iter_stream_fields(f, size, max_fields=64, peek=2048):
            fields.append(sf)
    except ProtobufLimit:
        pass  # consistent so far: enough to decide
    except ProtobufError:
        return False
    if not fields:
        return False
    shape = {(sf.number, sf.wire_type) for sf in fields}
    try:
        if shape <= set(_SAVED_MODEL.items()) and any(sf.number == 2 for sf in fields):
            return all(_peek_meta_graph(sf) for sf in fields if sf.number == 2)
        if shape <= set(_GRAPH_DEF.items()) and any(sf.number == 1 for sf in fields):
            return all(_peek_node(sf) for sf in fields if sf.number == 1)
    except ProtobufError:
        return False
    return False


def _peek_meta_graph(sf) -> bool:
    seen = list(iter_fields(sf.peek, total=sf.value))
    return bool(seen) and all(f.wire_type == LEN and f.number <= 32 for f in seen)


def _peek_node(sf) -> bool:
    op = None
    for f in iter_fields(sf.peek, total=sf.value):
        if _NODE_DEF.get(f.number) != f.wire_type:
            return False
        if f.number == 2 and not f.truncated:
            op = as_text(f.value)
    return bool(op) and op.replace("_", "").replace(">", "").isalnum()


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------

def _danger_problems(graph: TFGraph, location: str) -> list[Problem]:
    problems = []
    if file_ops := sorted(op for op in TF_FILE_OPS if op in graph.ops):
        problems.append(Problem("high", "TensorFlow graph reads or writes files", location,
                                f"the graph uses {', '.join(file_ops)}: running the model can read or write files on the serving host."))
    if py_ops := sorted(op for op in TF_PYTHON_OPS if op in graph.ops):
        problems.append(Problem("high", "TensorFlow graph calls back into Python", location,
                                f"the graph uses {', '.join(py_ops)}, which runs a Python function registered in the loading process."))
    return problems


def tf_graph_problems(data: bytes, location: str) -> list[Problem]:
    """The dangerous ops of a serialized SavedModel/GraphDef (an archive member named *.pb), found by parsing.

    A member named saved_model.pb that does not parse is ``high``; another .pb that is no graph is ``medium``
    (it may be some other protobuf); fingerprint.pb and keras_metadata.pb are TensorFlow's own non-graph files."""
    name = PurePosixPath(location.replace("\\", "/")).name
    if name in TF_AUXILIARY_PROTOS:
        return []
    try:
        return _danger_problems(parse_tf_graph(data), location)
    except ProtobufLimit as exc:
        return [Problem("high", "TensorFlow graph too large to inspect", location, f"{exc}; the rest was not checked.")]
    except ProtobufError as exc:
        severity = "high" if name == "saved_model.pb" else "medium"
        return [Problem(severity, "TensorFlow graph could not be parsed", location,
                        f"the file does not parse as a SavedModel or GraphDef ({_short(str(exc))}); its ops were not checked.")]


def check_savedmodel(path) -> list[Finding]:
    """Parse a SavedModel or frozen GraphDef (.pb) and flag file and Python-callback ops; summarise the ops."""
    path = Path(path)
    what = "TensorFlow SavedModel"
    try:
        size = path.stat().st_size
        if size > MAX_TF_GRAPH_BYTES:
            return [not_inspected(what, f"The file is {size} bytes, beyond the 2 GiB protobuf limit.", path.name, {"file_size": size})]
        graph = _parse_file(path, size)
    except OSError as exc:
        return [not_inspected(what, f"The file cannot be read ({exc.__class__.__name__}).", path.name)]
    except ProtobufLimit as exc:
        return [not_inspected(what, f"The graph is too large to walk ({exc}).", path.name, {"file_size": size})]
    except ProtobufError as exc:
        return [not_inspected(what, f"The file does not parse as a SavedModel or GraphDef protobuf ({_short(str(exc))}).",
                              path.name, {"file_size": size})]
    findings = [_finding(p.title, Severity.high, _EXPLAIN[p.title] + " " + p.detail, _DO_NOT_LOAD,
                         {"location": p.location, "ops": {op: graph.ops[op] for op in (*TF_FILE_OPS, *TF_PYTHON_OPS) if op in graph.ops}})
                for p in _danger_problems(graph, path.name)]
    top_ops = [{"op": op, "count": n} for op, n in graph.ops.most_common()]
    findings.append(_finding(
        f"{graph.kind}: {graph.nodes} nodes, {len(graph.ops)} distinct ops", Severity.info,
        f"Parsed as a {graph.kind} ({graph.meta_graphs} meta graphs, {graph.functions} library functions)"
        + ("; no file or Python-callback ops." if len(findings) == 0 else "."),
        evidence={"kind": graph.kind, "schema_version": graph.schema_version, "meta_graphs": graph.meta_graphs,
                  "nodes": graph.nodes, "functions": graph.functions, "ops": _capped(top_ops), "file_size": size}))
    return findings


_EXPLAIN = {
    "TensorFlow graph reads or writes files": "Serving or calling this model runs ops that read or write files on the host.",
    "TensorFlow graph calls back into Python": "Running this graph calls Python functions of the loading process.",
}


def _parse_file(path: Path, size: int) -> TFGraph:
    if size == 0:
        raise NotATensorFlowGraph("empty file")
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # no copy of a graph that may be large
    failure = None
    try:
        return parse_tf_graph(mapped)
    except ProtobufError as exc:
        failure = exc.__class__(str(exc))  # without the traceback, whose frames still hold views of the map
    finally:
        try:
            mapped.close()
        except BufferError:
            pass  # a view is still alive; the map closes when it is collected
    raise failure
