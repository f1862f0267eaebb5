"""TensorFlow SavedModel / GraphDef protobufs: the ops a graph runs, found without TensorFlow."""

from worker.inspect.common import Problem

# TensorFlow ops that touch the file system or call back into Python when a graph runs.
# SaveV2/RestoreV2 are left out: every SavedModel has them to load its own variables.
TF_FILE_OPS = ("ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "WholeFileReader", "WholeFileReaderV2",
               "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReaderV2", "TFRecordReaderV2", "LMDBReader",
               "TextLineDataset", "TFRecordDataset", "FixedLengthRecordDataset", "PrintV2", "DebugIdentityV2")
TF_PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")


def tf_graph_problems(data: bytes, location: str) -> list[Problem]:
    """Find op names in a serialized GraphDef/SavedModel without TensorFlow: NodeDef.op is field 2, a
    length-prefixed string (tag 0x12), in the main graph and in the function library alike."""
    def used(ops):
        return sorted(op for op in ops if b"\x12" + bytes([len(op)]) + op.encode() in data)

    problems = []
    if file_ops := used(TF_FILE_OPS):
        problems.append(Problem("high", "TensorFlow graph reads or writes files", location,
                                f"the graph uses {', '.join(file_ops)}: running the model can read or write files on the serving host."))
    if py_ops := used(TF_PYTHON_OPS):
        problems.append(Problem("high", "TensorFlow graph calls back into Python", location,
                                f"the graph uses {', '.join(py_ops)}, which runs a Python function registered in the loading process."))
    return problems
