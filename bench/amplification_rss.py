"""Peak RSS of scanning zips that hold huge pickles (the amplification case of the security review).

Builds, in a temporary folder: (1) a zip with a deflated 1 GiB pickle (one BINBYTES8 argument, ratio ~110,
under the bomb limit) followed by an os.system payload, (2) a zip with a pickle of millions of small opcodes,
(3) the 1 GiB pickle as a plain top-level file. Each is scanned in a fresh child process (``Walker.scan_file``,
nothing is unpickled) which prints its ru_maxrss. Usage: .venv/bin/python bench/amplification_rss.py [--gib 1]
"""

import argparse
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

EVIL = b"cos\nsystem\n(S'touch /tmp/poisonscan-canary'\ntR."
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


def giant_pickle_chunks(size: int):
    yield b"\x80\x04}\x94\x8c\x01w\x94\x8e" + struct.pack("<Q", size)
    block = 1 << 20
    for i in range(size // block):  # 8 KiB of noise per MiB: deflates ~110x, under the 200x bomb limit
        yield os.urandom(8192) + b"\0" * (block - 8192)
    yield b"\x94s." + EVIL


def write_zip(path: Path, name: bytes, chunks) -> None:
    z, crc, usize, csize = zlib.compressobj(1, zlib.DEFLATED, -15), 0, 0, 0
    with path.open("wb") as f:
        f.write(b"\0" * (30 + len(name)))
        for chunk in chunks:
            crc, usize = zlib.crc32(chunk, crc), usize + len(chunk)
            out = z.compress(chunk)
            csize += len(out)
            f.write(out)
        out = z.flush()
        csize += len(out)
        f.write(out)
        zip64 = struct.pack("<HHQQ", 1, 16, usize, csize)
        f.seek(0)
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 0) + name)
        f.seek(0, 2)
        cd_start = f.tell()
        f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                            len(name), len(zip64), 0, 0, 0, 0, 0) + name + zip64)
        cd_size = f.tell() - cd_start
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, cd_size, cd_start, 0))


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
        write_zip(Path(args.make_many), b"archive/data.pkl", [pickle.dumps([float(i) for i in range(args.ints)], protocol=4) + EVIL])
        return
    size = int(args.gib * 1024**3)
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as tmp:
        tmp = Path(tmp)
        write_zip(tmp / "giant.pt", b"archive/data.pkl", giant_pickle_chunks(size))
        print(f"giant argument in zip ({(tmp / 'giant.pt').stat().st_size >> 20} MiB zip, {size >> 20} MiB pickle):", measure(tmp / "giant.pt"))
        # built in a child: a child's ru_maxrss starts from its parent's RSS at fork, so the parent stays small
        subprocess.run([sys.executable, __file__, "--make-many", str(tmp / "many.pt"), "--ints", str(args.ints)], check=True)
        print(f"{args.ints} small opcodes in zip ({(tmp / 'many.pt').stat().st_size >> 20} MiB zip):", measure(tmp / "many.pt"))
        (tmp / "many.pt").unlink()
        with (tmp / "giant.pkl").open("wb") as f:
            for chunk in giant_pickle_chunks(size):
                f.write(chunk)
        print(f"giant argument, top-level pickle ({size >> 20} MiB):", measure(tmp / "giant.pkl"))


if __name__ == "__main__":
    main()
