"""Run the static inspection of an upload in a child process with resource limits.

Parsing hostile bytes is where a scanner gets hurt (decompression bombs, parser bugs, pathological
nesting), so the worker never does it in its own process: a child with capped address space, CPU time,
open files and file size does it and writes its findings as JSON on stdout. A child that a limit kills,
that crashes or that says too much is a ``high`` "not inspected" finding: the gate fails closed.

    python -m worker.inspect.sandbox   # the child: reads a request (JSON) on stdin
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from worker.findings import Finding
from worker.inspect.archives import Limits
from worker.inspect.artifact import ArtifactInspection, FileInspection, InspectOptions, inspect_artifact
from worker.inspect.common import not_inspected
from worker.inspect.pickle_report import UserAllowlist

MiB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 4096  # address space: room for the parsers (a large ONNX protobuf is read whole), yet a ceiling
    cpu_s: int = 900
    wall_s: int = 1200
    open_files: int = 256
    file_mb: int = 65536  # what the child may write (temporary spill files)
    output_mb: int = 64


def inspect_in_child(path: Path, filename: str | None, options: InspectOptions,
                     limits: SandboxLimits = SandboxLimits()) -> ArtifactInspection:
    request = {"path": str(path), "filename": filename, "allow_pickle": options.allow_pickle,
               "allowlist": list(options.allowlist.entries), "limits": asdict(options.limits)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # No preexec_fn: it can deadlock in a parent with threads (a worker that has run TensorFlow). The limits are
        # set on the child from here, before it is sent the request, so it touches no upload without them.
        with subprocess.Popen([sys.executable, "-m", "worker.inspect.sandbox"], stdin=subprocess.PIPE, stdout=out,
                              stderr=err, env=_child_env()) as proc:
            try:
                _apply_limits(proc.pid, limits)
                proc.communicate(json.dumps(request).encode(), timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                return _killed(path, filename, f"it ran past the {limits.wall_s} s wall-clock limit and was killed")
            except BaseException:
                proc.kill()
                raise
        size = out.tell()
        out.seek(0)
        err.seek(max(err.tell() - 2000, 0))
        stderr = err.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            return _killed(path, filename, _exit_reason(proc.returncode, limits, stderr))
        if size > limits.output_mb * MiB:
            return _killed(path, filename, f"it wrote more than {limits.output_mb} MB of findings")
        try:
            return _from_json(json.loads(out.read()))
        except (ValueError, KeyError, TypeError) as exc:
            return _killed(path, filename, f"its answer could not be read ({exc})")


def _apply_limits(pid: int, limits: SandboxLimits) -> None:
    for what, value in ((resource.RLIMIT_AS, limits.memory_mb * MiB), (resource.RLIMIT_CPU, limits.cpu_s),
                        (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_FSIZE, limits.file_mb * MiB),
                        (resource.RLIMIT_CORE, 0)):
        resource.prlimit(pid, what, (value, value))


def _child_env() -> dict:
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # One thread per math library: thread pools reserve address space the limit would spend for nothing.
    return env | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _exit_reason(code: int, limits: SandboxLimits, stderr: str) -> str:
    if code in (-9, -24):  # SIGKILL / SIGXCPU: the CPU limit (or the kernel's OOM killer)
        return f"it was killed by a resource limit (signal {-code}; CPU limit {limits.cpu_s} s, memory {limits.memory_mb} MB)"
    if code < 0:
        return f"it died of signal {-code}"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    if "MemoryError" in stderr:
        return f"it ran out of its {limits.memory_mb} MB memory limit"
    return f"it exited with status {code} ({last[:300]})"


def _killed(path: Path, filename: str | None, reason: str) -> ArtifactInspection:
    name = filename or path.name
    return ArtifactInspection("unknown", [FileInspection("", "unknown", structure=[not_inspected(
        name, f"The static inspection of {name} did not finish: {reason}.", "", {"sandbox": reason})])])


def _from_json(data: dict) -> ArtifactInspection:
    files = [FileInspection(f["file"], f["kind"], [Finding.from_dict(x) for x in f["serialization"]],
                            [Finding.from_dict(x) for x in f["structure"]], f["containers"]) for f in data["files"]]
    return ArtifactInspection(data["kind"], files)


def _to_json(inspection: ArtifactInspection) -> dict:
    return {"kind": inspection.kind, "files": [
        {"file": f.file, "kind": f.kind, "serialization": [x.to_dict() for x in f.serialization],
         "structure": [x.to_dict() for x in f.structure], "containers": f.containers} for f in inspection.files]}


def _child_main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    options = InspectOptions(UserAllowlist(tuple(request["allowlist"])), bool(request["allow_pickle"]), Limits(**request["limits"]))
    result = inspect_artifact(Path(request["path"]), request.get("filename"), options)
    sys.stdout.write(json.dumps(_to_json(result), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
