"""Rebuild the peer scanners' own test samples (malicious and benign) from pinned git mirrors.

    .venv/bin/python bench/peer_corpus.py [--mirror-root /work/.mirror] [--out bench/corpus/peers]

Sources (git directories made by the `fetch` tool, read with `git show COMMIT:path`, never checked out):
    picklescan  mmaitre314/picklescan   tests/data, tests/data2 (committed samples)
    modelscan   protectai/modelscan     tests/data (committed) + the pickle fixtures test_modelscan.py writes
    modelaudit  promptfoo/modelaudit    tests/assets (committed samples)
    fickling    trailofbits/fickling    the Pickled([...]) opcode lists in test/test_bypasses.py

Files those projects generate in their test setup are included only where that needs no loading:
- modelscan: pickles of classes whose __reduce__ names eval/os.system are written with pickle.dumps
  (dumping calls __reduce__, which only returns a reference); the raw-byte fixtures (malicious0, 10-14)
  are evaluated from their source by a byte-expression evaluator that knows only literals, +,
  pickle.<OPCODE>, b"".join and len().to_bytes. The other fixtures are assembled with the same globals
  and arguments (tests/hostile_files.py), so they are equivalent, not byte-identical.
  Skipped: dill pickles (dill is not installed), torch.save and Keras/TensorFlow fixtures (they build
  models), the numpy fixture (its safe half is made by np.load(allow_pickle=True)).
- fickling: each test's Pickled([...]) expression is built with fickling's opcode classes in
  bench/.venv-anchors and serialised with Pickled.dumps(); statements before it in the test are run
  only when they are plain assignments of literals, compile() (no exec), marshal.dumps or struct.pack.
  Tests whose opcodes are built in loops or helpers are skipped. squeezenet1_0_torchscript_v1_4.pt is
  absent from the mirror (over its size limit) and skipped.

Expected outcome per file, with where it comes from:
    label   malicious | benign | unlabelled (scanned, not scored: the project's tests state no verdict)
    source  the test file and function that asserts it, or the naming/folder convention used
Writes OUT/manifest.json (a list) and OUT/<project>/<upstream path>. Nothing here loads a sample.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests import hostile_files as hf  # noqa: E402

PINS = {  # project: (GitHub repo, pinned commit, folders holding samples)
    "picklescan": ("mmaitre314/picklescan", "f15d54da3dec9aa28a87ede82f87882bb80f1023", ("tests/data/", "tests/data2/")),
    "modelscan": ("protectai/modelscan", "8b8ed4bf78a863fcf3b664888dc7ff6ae22f5230", ("tests/data/",)),
    "modelaudit": ("promptfoo/modelaudit", "5ddfcdc34310d45a209872c7300585a3aa481971",
                   ("tests/assets/samples/", "tests/assets/pickles/", "tests/assets/exploits/", "tests/assets/scenarios/security_scenarios/")),
    "fickling": ("trailofbits/fickling", "854c99acd2637f97162dd2e1aa2dab4e8d55d77d", ("test/fixtures/",)),
}
TEST_DIRS = {"picklescan": "tests", "modelscan": "tests", "modelaudit": "tests", "fickling": "test"}
SKIP_EXT = re.compile(r"\.(py|md|txt|toml|cfg|ini)$")

# First matching rule wins: (path regex, label, why). Paths are upstream paths.
LABEL_RULES = {
    "picklescan": [
        (r"/(bad_pytorch\.pt|not_a_pickle\.bin)$", "benign", "test_scan_file_path / test_not_a_pickle_file expect 0 issues (not a pickle)"),
        (r"/(benign0_v\d\.pkl|benign_password_protected\.zip|(new_)?pytorch_model\.bin|int_arrays?(_compressed)?\.np[yz]|object_arrays?(_compressed)?\.np[yz])$",
         "benign", "expected ScanResult with 0 issues (file name benign*/int_*/object_* or test_scan_pytorch)"),
        (r".", "malicious", "expected ScanResult with Dangerous globals (test_scan_file_path / test_scan_directory_path; malicious*/GHSA-*/exploit names)"),
    ],
    "modelscan": [
        (r"/password_protected\.zip$", "unlabelled", "test_scan_directory_path expects it skipped (encrypted), no verdict"),
        (r"/(benign0_v\d\.pkl)$", "benign", "test_scan_file_path: no issues"),
        (r".", "malicious", "test_scan_pytorch / test_scan_pickle_operators / test_scan_directory_path: CRITICAL or HIGH issues"),
    ],
    "modelaudit": [
        (r"/tokenizer_config\.json$", "malicious", "same blob as malicious_cve_2024_34359.json (CVE-2024-34359 template)"),
        (r"/edge_cases/|/simple_nested\.pkl$", "unlabelled", "edge case / nested plain dict: the tests check handling, not a verdict"),
        (r"pipeline\.skops$", "benign", "a real scikit-learn pipeline: asserts no CVE finding"),
        (r"mixed_malicious_model/config\.json$", "benign", "plain config next to the scenario's malicious model.pkl"),
        (r"suspicious_benign|/benign|/safe_|safe_config|model_config\.yaml", "benign", "folder/name convention benign*/safe_*"),
        (r".", "malicious", "folder/name convention malicious*/exploits/*_attack/evil/nested_pickle_*/obfuscated/suspicious_*"),
    ],
    "fickling": [(r".", "benign", "TorchScript fixture")],
}


@dataclass
class PeerSample:
    project: str
    name: str          # path under the corpus root, e.g. peers/picklescan/tests/data/malicious0.pkl
    label: str         # malicious | benign | unlabelled
    source: str        # test file::function or convention
    upstream: str      # upstream path, or "generated: ..." for fixtures made here
    commit: str
    sha256: str
    size: int
    check: str = ""    # pickletools on .pkl: static check only, records malformed encodings


class Mirror:
    def __init__(self, root: Path, project: str):
        repo, self.commit, self.roots = PINS[project]
        self.gitdir = root / repo.replace("/", "+") / "repo"
        if not self.gitdir.exists():
            raise SystemExit(f"{self.gitdir} is missing: fetch github:{repo} first")

    def git(self, *args: str) -> bytes:
        return subprocess.run(["git", "--git-dir", str(self.gitdir), *args], capture_output=True, check=True).stdout

    def files(self) -> list[tuple[str, int]]:
        out = self.git("ls-tree", "-r", "-l", self.commit, "--", *self.roots).decode()
        rows = [ln.split(None, 4) for ln in out.splitlines()]
        return [(r[4], int(r[3])) for r in rows if r[3].isdigit() and not SKIP_EXT.search(r[4])]  # "BAD": blob absent

    def show(self, path: str) -> bytes:
        return self.git("show", f"{self.commit}:{path}")

    def has(self, path: str) -> bool:
        return subprocess.run(["git", "--git-dir", str(self.gitdir), "cat-file", "-e", f"{self.commit}:{path}"], capture_output=True).returncode == 0

    def where_tested(self, path: str, test_dir: str) -> str:
        """The first test_*.py function naming this file (git grep at the pinned commit)."""
        base = path.rsplit("/", 1)[-1]
        try:
            out = self.git("grep", "-n", "-F", base, self.commit, "--", test_dir).decode(errors="replace")
        except subprocess.CalledProcessError:
            return ""
        hits = [ln.split(":", 3)[1:3] for ln in out.splitlines()]
        hits.sort(key=lambda h: not re.search(r"(^|/)test_[^/]*\.py$", h[0]))
        for file, line in hits:
            if file.endswith(".py"):
                return f"{file}::{_enclosing_def(self.show(file).decode(errors='replace'), int(line))}"
        return ""


def _enclosing_def(src: str, line: int) -> str:
    names = []
    for ln in src.splitlines()[:line][::-1]:
        m = re.match(r"(\s*)(?:async\s+)?(def|class)\s+(\w+)", ln)
        if m and (not names or len(m.group(1)) < names[-1][0]):
            names.append((len(m.group(1)), m.group(3)))
            if not m.group(1):
                break
    return ".".join(n for _, n in reversed(names)) or "<module>"


def label_for(project: str, path: str) -> tuple[str, str]:
    for pattern, label, why in LABEL_RULES[project]:
        if re.search(pattern, path):
            return label, why
    raise AssertionError(path)


# --------------------------------------------------------------------------------------------
# Committed samples
# --------------------------------------------------------------------------------------------

def committed(m: Mirror, project: str) -> list[tuple[str, bytes, str, str, str]]:
    """(upstream path, bytes, label, source, upstream) for every committed sample under the roots."""
    out = []
    for path, _ in m.files():
        data = m.show(path)
        if data.startswith(b"version https://git-lfs"):
            continue
        label, why = label_for(project, path)
        test = m.where_tested(path, TEST_DIRS[project])
        out.append((path, data, label, f"{test} ({why})" if test else why, path))
    return out


# --------------------------------------------------------------------------------------------
# modelscan's generated fixtures
# --------------------------------------------------------------------------------------------

class _Reduce:
    """pickle.dumps(_Reduce(fn, args)) writes a reference to fn and args; nothing is called."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _byte_expr(node: ast.AST, env: dict):
    """Evaluate literals, +, pickle.<OPCODE>, b"".join([...]), len(x).to_bytes(n, order) and names in env."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, str, int)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _byte_expr(node.left, env) + _byte_expr(node.right, env)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle":
        value = getattr(pickle, node.attr)
        assert isinstance(value, bytes), node.attr
        return value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_byte_expr(e, env) for e in node.elts]
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        f = node.func
        if f.attr == "join" and isinstance(f.value, ast.Constant) and f.value.value == b"":
            return b"".join(_byte_expr(node.args[0], env))
        if f.attr == "to_bytes" and isinstance(f.value, ast.Call) and getattr(f.value.func, "id", "") == "len":
            return len(_byte_expr(f.value.args[0], env)).to_bytes(*[_byte_expr(a, env) for a in node.args])
    raise ValueError(f"not a byte expression: {ast.dump(node)[:120]}")


def _gen_function(fn: ast.FunctionDef) -> bytes:
    env: dict = {}
    for stmt in fn.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            env[stmt.targets[0].id] = _byte_expr(stmt.value, env)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add):
            env[stmt.target.id] = env[stmt.target.id] + _byte_expr(stmt.value, env)
        elif isinstance(stmt, ast.Return):
            return _byte_expr(stmt.value, env)
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            raise ValueError(f"{fn.name}: unexpected statement")
    raise ValueError(f"{fn.name}: no return")


def modelscan_generated(m: Mirror) -> list[tuple[str, bytes, str, str, str]]:
    test = "tests/test_modelscan.py"
    tree = ast.parse(m.show(test).decode())
    gens = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_gen")}
    fixture = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "file_path")
    out = []

    def add(name: str, data: bytes, label: str, func: str, how: str):
        out.append((f"generated/{name}", data, label, f"{test}::{func} ({how})", f"generated: {test}::file_path"))

    for v in (0, 3, 4):
        add(f"benign0_v{v}.pkl", pickle.dumps(["a", "b", "c"], protocol=v), "benign", "test_scan_file_path", "pickle.dumps as the fixture")
        add(f"malicious1_v{v}.pkl", pickle.dumps(_Reduce(eval, ("print('456')",)), protocol=v), "malicious", "test_scan_pickle_operators", "pickle.dumps of Malicious1 (eval)")
        add(f"malicious2_v{v}.pkl", pickle.dumps(_Reduce(os.system, ("ls -la",)), protocol=v), "malicious", "test_scan_pickle_operators", "pickle.dumps of Malicious2 (os.system)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.pkl", pickle.dumps(_Reduce(eval, ("print('456')",)), protocol=4))
    add("malicious1.zip", buf.getvalue(), "malicious", "test_scan_directory_path", "zip of Malicious1 as the fixture")

    # raw bytes written by initialize_data_file(path, <expr>) and the *_gen() helpers, evaluated from source
    for call in ast.walk(fixture):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "initialize_data_file" and isinstance(call.args[0], ast.JoinedStr):
            name = call.args[0].values[-1].value.rsplit("/", 1)[-1]
            expr = call.args[1]
            try:
                if isinstance(expr, ast.Call) and getattr(expr.func, "id", "") in gens:
                    data = _gen_function(gens[expr.func.id])
                elif isinstance(expr, ast.Name):
                    data = _local_bytes(fixture, expr.id)
                else:
                    data = _byte_expr(expr, {})
            except ValueError:
                continue  # pickle.dumps(...) of a class, e.g. malicious3/6: assembled below
            add(name, data, "malicious", "test_scan_pickle_operators", "raw bytes evaluated from the fixture source")

    # fixtures dumping objects whose import needs network libraries: same globals and args, assembled
    G, Call, asm = hf.G, hf.Call, hf.assemble
    assembled = {
        "malicious3.pkl": (Call(G("http.client", "HTTPSConnection"), ("github.com",)), 2),
        "malicious4.pickle": (Call(G("requests.api", "get"), ("https://github.com",)), 4),
        "malicious5.pickle": (Call(G("aiohttp.client", "ClientSession"), ()), 4),
        "malicious7.pkl": (Call(G("socket", "create_connection"), (("github.com", 80),)), 4),
        "malicious8.pkl": (Call(G("subprocess", "run"), (["ls", "-l"],)), 4),
        "malicious9.pkl": (Call(G("sys", "exit"), (0,)), 4),
        "malicious15.pkl": (Call(G("bdb", "Bdb.run"), (Call(G("bdb", "Bdb"), ()), 'import os\nos.system("whoami")')), 4),
    }
    for name, (value, proto) in assembled.items():
        add(name, asm(value, proto), "malicious", "test_scan_pickle_operators", "assembled with the fixture's global and arguments")
    add("malicious6.pkl", pickle.dumps(["a", "b", "c"]) + asm(Call(G("requests.api", "get"), ("https://github.com",)), 4),
        "malicious", "test_scan_pickle_operators", "benign pickle + requests.get pickle, stacked as the fixture")
    return out


def _local_bytes(fn: ast.FunctionDef, name: str) -> bytes:
    for stmt in ast.walk(fn):
        if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", "") == name:
            return _byte_expr(stmt.value, {})
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# fickling's opcode-list tests, built with fickling itself in the anchor venv
# --------------------------------------------------------------------------------------------

FICKLING_BUILDER = r'''
import ast, base64, json, marshal, pickle, struct, sys
import fickling.fickle as op
from fickling.fickle import Pickled
src = sys.stdin.read()
SAFE_CALLS = {"compile", "marshal.dumps", "struct.pack", "bytes", "len"}
def call_name(f):
    return f.id if isinstance(f, ast.Name) else (f"{call_name(f.value)}.{f.attr}" if isinstance(f, ast.Attribute) else "?")
def prefix_ok(stmts):
    for s in stmts:
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
            continue  # docstring
        if not isinstance(s, ast.Assign):
            return False
        for c in ast.walk(s):
            if isinstance(c, ast.Call) and call_name(c.func) not in SAFE_CALLS:
                return False
    return True
out = {}
for cls in ast.parse(src).body:
    if not isinstance(cls, ast.ClassDef):
        continue
    for fn in cls.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
            continue
        for i, s in enumerate(fn.body):
            if isinstance(s, ast.Assign) and isinstance(s.value, ast.Call) and call_name(s.value.func) == "Pickled":
                if not prefix_ok(fn.body[:i]):
                    out[fn.name] = {"skip": "statements before Pickled are not plain assignments"}
                    break
                ns = {"op": op, "Pickled": Pickled, "marshal": marshal, "struct": struct, "pickle": pickle, "compile": compile}
                try:
                    exec(compile(ast.Module(fn.body[:i + 1], []), "<test>", "exec"), ns)
                    pickled, note = ns[s.targets[0].id], ""
                    try:
                        data = pickled.dumps()
                    except NotImplementedError:  # this fickling cannot encode FRAME; framing is optional
                        data, note = Pickled([o for o in pickled if not isinstance(o, op.Frame)]).dumps(), "FRAME dropped"
                    out[fn.name] = {"data": base64.b64encode(data).decode(), "src": ast.get_source_segment(src, fn), "note": note}
                except Exception as e:
                    out[fn.name] = {"skip": f"{type(e).__name__}: {e}"[:160]}
                break
print(json.dumps(out))
'''


def fickling_generated(m: Mirror, anchor_python: Path) -> tuple[list, list]:
    test = "test/test_bypasses.py"
    if not anchor_python.exists():
        return [], [f"{test}: {anchor_python} missing (fickling is needed to build the opcode lists)"]
    proc = subprocess.run([str(anchor_python), "-c", FICKLING_BUILDER], input=m.show(test).decode(), capture_output=True, text=True)
    if proc.returncode:
        return [], [f"{test}: builder failed: {proc.stderr.strip()[-300:]}"]
    out, skipped = [], []
    for name, r in json.loads(proc.stdout).items():
        if "skip" in r:
            skipped.append(f"{test}::{name}: {r['skip']}")
            continue
        src = r["src"]
        if "not_flagged" in name or "assertIsNone(detailed.get(\"UnsafeImports\"))" in src:
            label, why = "benign", "asserts no UnsafeImports finding"
        elif re.search(r"assertGreater\(\s*\w+(\.severity)?", src) and "LIKELY_SAFE" in src:
            label, why = "malicious", "asserts severity > LIKELY_SAFE"
        else:
            label, why = "unlabelled", "no severity assertion"
        note = f", {r['note']}" if r.get("note") else ""
        out.append((f"generated/{name}.pkl", base64.b64decode(r["data"]), label, f"{test}::TestBypasses.{name} ({why}{note})", f"generated: {test}::{name}"))
    return out, skipped


# --------------------------------------------------------------------------------------------

def _pickle_check(path: str, data: bytes) -> str:
    if not path.endswith((".pkl", ".pickle")):
        return ""
    try:
        pickletools.dis(data, out=io.StringIO())
        return "pickletools.dis ok"
    except Exception as exc:  # noqa: BLE001  (several samples are malformed on purpose)
        return f"pickletools: {exc}"[:160]


def build(mirror_root: Path, out: Path, anchor_python: Path) -> tuple[list[PeerSample], list[str]]:
    if out.exists():
        import shutil
        shutil.rmtree(out)
    samples, skipped = [], []
    for project in PINS:
        m = Mirror(mirror_root, project)
        rows = committed(m, project)
        if project == "modelscan":
            rows += modelscan_generated(m)
            skipped += ["modelscan: dill fixtures (dill absent), torch.save / Keras / TensorFlow fixtures (build models), numpy fixture (np.load(allow_pickle=True))"]
        if project == "fickling":
            gen, skip = fickling_generated(m, anchor_python)
            rows += gen
            skipped += skip
            if not any(r[0].endswith("squeezenet1_0_torchscript_v1_4.pt") for r in rows):
                skipped.append("fickling: test/fixtures/squeezenet1_0_torchscript_v1_4.pt (absent from the mirror: over its size limit)")
        for path, data, label, source, upstream in rows:
            name = f"peers/{project}/{path}"
            dest = out.parent / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            samples.append(PeerSample(project, name, label, source, upstream, m.commit, hashlib.sha256(data).hexdigest(), len(data), _pickle_check(path, data)))
    (out / "manifest.json").write_text(json.dumps({"pins": {p: {"repo": r, "commit": c} for p, (r, c, _) in PINS.items()},
                                                   "skipped": skipped, "samples": [asdict(s) for s in samples]}, indent=2))
    return samples, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror-root", type=Path, default=Path("/work/.mirror"), help="folder holding <owner>+<name>/repo git dirs")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "corpus" / "peers", help="output folder (wiped), manifest.json inside")
    ap.add_argument("--anchor-python", type=Path, default=REPO / "bench" / ".venv-anchors" / "bin" / "python", help="a python with fickling")
    args = ap.parse_args(argv)
    samples, skipped = build(args.mirror_root, args.out.resolve(), args.anchor_python)
    for project in PINS:
        mine = [s for s in samples if s.project == project]
        counts = {lab: sum(s.label == lab for s in mine) for lab in ("malicious", "benign", "unlabelled")}
        print(f"{project:10} {PINS[project][1][:12]}  {len(mine):4} files  {counts}")
    for s in skipped:
        print(f"skipped: {s}")
    print(f"manifest: {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
