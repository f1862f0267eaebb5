"""Inspect one artifact statically: a file, a folder (a Hugging Face-style snapshot), or a zip/tar of a folder.

Every file is identified by content (its name only breaks ties), walked for pickle streams through every
container layer, and given its format's structure check. The result says, per file, what was found; the
gate fails closed: a file of a kind poisonscan does not understand is a ``high`` finding, not a pass.
Runs in-process here; ``worker.inspect.sandbox`` runs it in a child process with resource limits.
"""

import os
import re
import shutil
import stat
import tarfile
import tempfile
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from worker.findings import Finding, Severity
from worker.inspect.archives import Limits, Walker, member_escapes
from worker.inspect.checks import structure_check
from worker.inspect.common import not_inspected
from worker.inspect.formats import COMPRESSED_KINDS, sniff
from worker.inspect.pickle_report import UserAllowlist, pickle_findings

# Kinds that hold data only: nothing in them is code a loader runs.
DATA_KINDS = frozenset({"text", "json", "jsonl", "csv", "png", "parquet", "empty"})
# Kinds a loader may run code from, or whose structure we check: inspected, never merely accepted.
CODE_NAMES = (".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe", ".sh", ".bat", ".ps1", ".js")
# Files beside a model that hold tensors or bookkeeping only, recognised by name and shape: TensorFlow checkpoint
# shards and index of a SavedModel, its fingerprint, and SentencePiece tokenizer models (protobufs).
COMPANION_NAMES = re.compile(r"^(variables\.index|variables\.data-\d+-of-\d+|fingerprint\.pb|keras_metadata\.pb)$")
# Containers and pickles: the archive walk reads every byte of them that can carry code.
WALKED_KINDS = frozenset({"pickle", "pytorch_zip", "npy", "npz", "zip", "tar", "7z"} | COMPRESSED_KINDS)
BUNDLE_KINDS = frozenset({"zip", "tar"})  # a plain archive of a folder (PyTorch/Keras/npz zips have kinds of their own)
MAX_BUNDLE_FILES = 10_000
MAX_BUNDLE_BYTES = 64 * 1024**3  # extracted for structure checks, in all


@dataclass
class InspectOptions:
    allowlist: UserAllowlist = field(default_factory=UserAllowlist)
    allow_pickle: bool = False
    limits: Limits = field(default_factory=Limits)


@dataclass
class FileInspection:
    file: str  # relative to the artifact ('' for a single file)
    kind: str
    serialization: list[Finding] = field(default_factory=list)
    structure: list[Finding] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)  # archive layers opened on the way (evidence of coverage)


@dataclass
class ArtifactInspection:
    kind: str  # the artifact's own kind ('folder' for a directory)
    files: list[FileInspection] = field(default_factory=list)


def inspect_artifact(path: Path, filename: str | None, options: InspectOptions) -> ArtifactInspection:
    name = filename or path.name
    if path.is_dir():
        result = ArtifactInspection("folder", _inspect_folder(path, options))
        contents = result.files
    else:
        kind = sniff(path, filename)
        result = ArtifactInspection(kind, [_inspect_file(path, name, "", kind, options)])
        contents = result.files
        if kind in BUNDLE_KINDS:  # a zip/tar of a folder: the walk found its pickles; each member gets its format's check
            contents = _inspect_bundle_members(path, kind, options)
            result.files += contents
    if all(fi.kind in DATA_KINDS for fi in contents):  # nothing but data, or nothing at all: no model to vouch for
        result.files[0:0] = [FileInspection("", result.kind, structure=[not_inspected(
            name, f"It holds no model: {'only data files' if contents else 'no files'} "
            f"({', '.join(sorted({fi.kind for fi in contents})) or 'empty'}).", "", {"detected_kind": result.kind})])]
    return result


def _inspect_folder(root: Path, options: InspectOptions) -> list[FileInspection]:
    out: list[FileInspection] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if len(out) >= MAX_BUNDLE_FILES:
                out.append(FileInspection(rel, "unknown", [not_inspected(
                    "folder", f"The folder holds more than {MAX_BUNDLE_FILES} files; the rest were not scanned.", rel)]))
                return out
            out.append(_inspect_path(path, rel, options))
    return _accept_onnx_external_data(out)


def _accept_onnx_external_data(files: list[FileInspection]) -> list[FileInspection]:
    """Raw tensor bytes that an ONNX model in the folder names as its external data are data, not an unknown format
    (they were still searched for pickles). Only locations inside the folder count: escaping ones are critical."""
    referenced = set()
    for fi in files:
        for f in fi.structure:
            if f.title == "ONNX model references external data files":
                folder = Path(fi.file).parent
                referenced |= {(folder / loc).as_posix() for loc in f.evidence.get("files", [])}
    for fi in files:
        if fi.file in referenced and fi.kind == "unknown":
            fi.structure = [f for f in fi.structure if "not inspected" not in f.title]
    return files


def _inspect_path(path: Path, rel: str, options: InspectOptions) -> FileInspection:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return FileInspection(rel, "link", structure=[Finding(
            f"{rel} is a symbolic link", Severity.high, 0.8,
            f"{rel} points to {os.readlink(path)!r}. A loader follows it out of the model folder (to credentials or "
            "another model); poisonscan does not follow links.", "Replace links with the files themselves.",
            {"target": os.readlink(path)})])
    if not stat.S_ISREG(mode):
        return FileInspection(rel, "special", structure=[not_inspected(rel, "It is not a regular file (a device, FIFO or socket).", rel)])
    return _inspect_file(path, path.name, rel, sniff(path, path.name), options)


def _inspect_file(path: Path, name: str, rel: str, kind: str, options: InspectOptions) -> FileInspection:
    result = FileInspection(rel, kind)
    try:
        scan = Walker(options.limits).scan_file(path)
        result.serialization = pickle_findings(scan, options.allowlist, options.allow_pickle)
        result.containers = scan.containers[:100]
        result.structure = _structure(path, name, kind)
    except Exception as exc:  # noqa: BLE001 - an inspector that crashes must not pass the file
        result.structure.append(not_inspected(
            rel or name, f"The {kind} inspector crashed ({type(exc).__name__}: {str(exc)[:200]}).", rel,
            {"traceback": traceback.format_exc(limit=4)[-2000:]}))
    return result


def _structure(path: Path, name: str, kind: str) -> list[Finding]:
    check = structure_check(kind)
    if check is not None:
        return check(path)
    if name.lower().endswith(CODE_NAMES) or kind in ("executable", "script"):
        return [Finding(
            f"{name} is executable code", Severity.high, 0.9,
            f"{name} is a program or Python source shipped with the model. Loaders that trust remote code "
            "(trust_remote_code, custom layers) import and run it; poisonscan does not review code.",
            "Review the code by hand, or use a model that needs none; never enable trust_remote_code for it unreviewed.")]
    if kind in DATA_KINDS or (kind == "unknown" and (COMPANION_NAMES.match(name) or _is_sentencepiece(path, name))):
        return []
    if kind in WALKED_KINDS:
        return []
    return [not_inspected(name, f"Its content ({kind}) is not a format poisonscan understands, so it cannot say whether "
                          "a loader would run code from it.", "", {"detected_kind": kind})]


def _is_sentencepiece(path: Path, name: str) -> bool:
    """A SentencePiece model (tokenizer.model, spiece.model): a protobuf whose every top-level field parses."""
    from worker.inspect.protobuf import ProtobufError, iter_fields

    if not name.endswith(".model") or path.stat().st_size > 64 * 1024**2:
        return False
    try:
        fields = list(iter_fields(path.read_bytes()))
    except ProtobufError:
        return False
    return bool(fields) and {f.number for f in fields} <= {1, 2, 3, 4, 5}


def _inspect_bundle_members(path: Path, kind: str, options: InspectOptions) -> list[FileInspection]:
    """Extract the members into a private temporary folder (names are ours, never the archive's) and check each."""
    tmp = Path(tempfile.mkdtemp(prefix="poisonscan-bundle-"))
    try:
        members, stopped = _extract_zip(path, tmp) if kind == "zip" else _extract_tar(path, tmp)
        out = [] if stopped is None else [FileInspection("", kind, structure=[not_inspected(
            f"{kind} archive members", f"Only the first {len(members)} members got their format checks: the archive has {stopped}.")])]
        for name, target in members:
            member_kind = sniff(target, Path(name).name)
            structure = _structure(target, Path(name).name, member_kind)
            if member_kind in BUNDLE_KINDS:  # a folder zipped inside the zip: one more level
                structure += [f for fi in _inspect_bundle_members(target, member_kind, options) for f in fi.structure]
            out.append(FileInspection(name, member_kind, structure=structure))
        return out
    except Exception as exc:  # noqa: BLE001 - the archive walk already reported what it could not read
        return [FileInspection("", kind, structure=[not_inspected(
            f"{kind} archive members", f"They could not be extracted for their format checks ({type(exc).__name__}: {str(exc)[:200]}).")])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_zip(path: Path, tmp: Path) -> tuple[list[tuple[str, Path]], str | None]:
    with zipfile.ZipFile(path) as zf:
        members = ((i.filename, i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist() if not i.is_dir())
        return _extract(members, tmp)


def _extract_tar(path: Path, tmp: Path) -> tuple[list[tuple[str, Path]], str | None]:
    with tarfile.open(path, mode="r:") as tf:
        members = ((i.name, i.size, lambda i=i: tf.extractfile(i)) for i in tf if i.isfile())
        return _extract(members, tmp)


def _extract(members, tmp: Path) -> tuple[list[tuple[str, Path]], str | None]:
    """Copy regular members to files named by their position (never by the archive's names), within the limits;
    also say why the rest was not extracted, if a limit stopped it."""
    out, total = [], 0
    for i, (name, size, open_member) in enumerate(members):
        total += size
        if i >= MAX_BUNDLE_FILES or total > MAX_BUNDLE_BYTES:
            return out, f"more than {MAX_BUNDLE_FILES} members or {MAX_BUNDLE_BYTES >> 30} GiB in all"
        if member_escapes(name):
            continue
        target = tmp / f"m{i}"
        with open_member() as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.append((name, target))
    return out, None
