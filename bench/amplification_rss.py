"""Peak RSS of scanning zips that hold huge pickles (the amplification case of the security review).

Builds, in a temporary folder: (1) a zip with a deflated 1 GiB pickle (one BINBYTES8 argument, ratio ~110,
under the bomb limit) followed by an os.system payload, (2) a zip with a pickle of millions of small opcodes,
(3) the 1 GiB pickle as a plain top-level file. Each is scanned in a fresh child process (``Walker.scan_file``,
nothing is unpickled) which prints its ru_maxrss. Usage: .venv/bin/python bench/amplification_rss.py [--gib 1]
"""

import argparse
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_files import write_amplification_zip, write_streamed_zip  # noqa: E402  (the corpus builders)

CANARY = Path("/tmp/poisonscan-canary")
EVIL = f"cos\nsystem\n(S'touch {CANARY}'\ntR.".encode()
CHILD = """
import resource, sys, time
from pathlib import Path
from worker.inspect.archives import Walker
t = time.monotonic()
r = Walker().scan_file(Path(sys.argv[1]))
called = sorted({g.qualified for h in r.pickles for g in h.analysis.globals if g.called})
print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} seconds={time.monotonic() - t:.1f} "
      f"called={called} problems={[(p.severity, p.title) for p in r.problems]}")
"""


def measure(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=root, capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--ints", type=int, default=4_000_000)
    parser.add_argument("--make-many")
    args = parser.parse_args()
    if args.make_many:
        write_streamed_zip(Path(args.make_many), b"archive/data.pkl", [pickle.dumps([float(i) for i in range(args.ints)], protocol=4) + EVIL])
        return
    size = int(args.gib * 1024**3)
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as tmp:
        tmp = Path(tmp)
        write_amplification_zip(tmp / "giant.pt", CANARY, size)
        print(f"giant argument in zip ({(tmp / 'giant.pt').stat().st_size >> 20} MiB zip, {size >> 20} MiB pickle):", measure(tmp / "giant.pt"))
        # built in a child: a child's ru_maxrss starts from its parent's RSS at fork, so the parent stays small
        subprocess.run([sys.executable, __file__, "--make-many", str(tmp / "many.pt"), "--ints", str(args.ints)], check=True)
        print(f"{args.ints} small opcodes in zip ({(tmp / 'many.pt').stat().st_size >> 20} MiB zip):", measure(tmp / "many.pt"))
        (tmp / "many.pt").unlink()
        with zipfile.ZipFile(tmp / "giant.pt") as zf, zf.open("archive/data.pkl") as src, (tmp / "giant.pkl").open("wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        print(f"giant argument, top-level pickle ({size >> 20} MiB):", measure(tmp / "giant.pkl"))


if __name__ == "__main__":
    main()
