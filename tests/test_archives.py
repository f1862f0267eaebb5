"""Containers that PyTorch's reader (or another loader) opens while Python's zipfile refuses them, 7z and lz4,
and bounded memory. Every zip here is built by hand with struct so each field can lie. Nothing is ever
unpickled: the payloads are bytes that would call os.system if they were."""

import io
import pickle
import struct
import tracemalloc
import zlib

import pytest

from worker.inspect import pickles
from worker.inspect.archives import Limits, Walker
from worker.inspect.pickles import analyze

EVIL = b"cos\nsystem\n(S'touch /tmp/poisonscan-canary'\ntR."


# --- hand-built zips ---------------------------------------------------------------------------

def local_header(name: bytes, data: bytes, method: int, flags: int, crc: int, sizes: bool = True) -> bytes:
    csize, usize = (len(data), 0) if sizes else (0, 0)
    return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0, crc if sizes else 0,
                       csize if sizes else 0, usize, len(name), 0) + name


def make_zip(members: list[dict], central: bool = True) -> bytes:
    """members: name, data, and optionally method (0/8), flags, crc, local_name, sizes (in the local header)."""
    out, records = bytearray(), []
    for m in members:
        method, flags = m.get("method", 0), m.get("flags", 0)
        raw = m["data"]
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = raw if method == 0 else deflate.compress(raw) + deflate.flush()
        crc = m.get("crc", zlib.crc32(raw))
        offset = len(out)
        header = bytearray(local_header(m.get("local_name", m["name"]), data, method, flags, crc, m.get("sizes", True)))
        if m.get("sizes", True):
            struct.pack_into("<I", header, 22, len(raw))
        out += header + data
        if not m.get("sizes", True):
            out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(data), len(raw))
        records.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, len(data), len(raw),
                                   len(m["name"]), 0, 0, 0, 0, 0, offset) + m["name"])
    if not central:
        return bytes(out)
    cd = b"".join(records)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(records), len(records), len(cd), len(out), 0)
    return bytes(out) + cd + eocd


def scan(tmp_path, data: bytes, name: str = "model.pt", limits: Limits | None = None):
    path = tmp_path / name
    path.write_bytes(data)
    return Walker(limits).scan_file(path)


def called_globals(result) -> set[str]:
    return {g.qualified for hit in result.pickles for g in hit.analysis.globals if g.called}


def problems(result) -> set[tuple[str, str]]:
    return {(p.severity, p.title) for p in result.problems}


def torch_like(member: dict) -> list[dict]:
    return [member, {"name": b"archive/version", "data": b"3\n"}]


@pytest.mark.parametrize("method", [0, 8])
@pytest.mark.parametrize("variant, expected", [
    ("encrypted flag", {("high", "zip member flagged as encrypted")}),
    ("flag bits 5 and 6", {("high", "zip member flagged as encrypted")}),
    ("wrong crc", {("medium", "zip member fails its CRC-32 check")}),
    ("local name differs", {("high", "zip local header names another file")}),
])
def test_zip_members_zipfile_refuses_are_scanned(tmp_path, method, variant, expected):
    member = {"name": b"archive/data.pkl", "data": EVIL, "method": method}
    member |= {"encrypted flag": {"flags": 0x01}, "flag bits 5 and 6": {"flags": 0x60}, "wrong crc": {"crc": 0xDEADBEEF},
               "local name differs": {"local_name": b"archive/other.pkl"}}[variant]
    result = scan(tmp_path, make_zip(torch_like(member)))
    assert "os.system" in called_globals(result)
    assert problems(result) == expected


@pytest.mark.parametrize("method", [0, 8])
def test_damaged_or_missing_central_directory(tmp_path, method):
    members = torch_like({"name": b"archive/data.pkl", "data": EVIL, "method": method})
    damaged = bytearray(make_zip(members))
    cd = damaged.index(b"PK\x01\x02")
    damaged[cd:cd + 4] = b"XX\x01\x02"  # zipfile: 'Bad magic number for central directory'
    for data in (bytes(damaged), make_zip(members, central=False)):
        result = scan(tmp_path, data)
        assert "os.system" in called_globals(result)
        assert ("medium", "zip central directory is damaged") in problems(result)
        assert not [p for p in result.problems if p.severity == "high"]


def test_data_descriptor_without_sizes_or_directory(tmp_path):
    members = [{"name": b"a.bin", "data": b"\0" * 5000, "method": 8, "flags": 0x08, "sizes": False},
               {"name": b"data.pkl", "data": EVIL, "method": 8, "flags": 0x08, "sizes": False},
               {"name": b"b.bin", "data": b"x" * 100, "method": 0, "flags": 0x08, "sizes": False}]
    result = scan(tmp_path, make_zip(members, central=False))
    assert "os.system" in called_globals(result)
    assert [h.location for h in result.pickles] == ["model.pt!data.pkl"]


def test_unsupported_method_and_broken_deflate_fail_closed(tmp_path):
    result = scan(tmp_path, make_zip([{"name": b"data.pkl", "data": EVIL, "method": 0}]).replace(b"\x14\x00\x00\x00\x00\x00", b"\x14\x00\x00\x00\x63\x00"))
    assert any(p.severity == "high" and "not inspected" in p.title for p in result.problems)
    broken = bytearray(make_zip([{"name": b"data.pkl", "data": EVIL + b" ".join(b"%d" % i for i in range(20000)), "method": 8}]))
    broken[500:600] = b"\xff" * 100  # inside the deflate stream, after the pickle-looking head
    result = scan(tmp_path, bytes(broken))
    assert [(p.severity, p.title) for p in result.problems] == [("high", "zip member not inspected: treated as unsafe")]


def test_hidden_local_entry_after_the_listed_ones(tmp_path):
    listed = make_zip([{"name": b"config.json", "data": b"{}"}])
    cd = listed.index(b"PK\x01\x02")
    hidden = make_zip([{"name": b"evil.pkl", "data": EVIL, "method": 8}], central=False)
    data = listed[:cd] + hidden + listed[cd:]
    eocd = bytearray(data[data.index(b"PK\x05\x06"):])
    struct.pack_into("<I", eocd, 16, cd + len(hidden))
    result = scan(tmp_path, data[:data.index(b"PK\x05\x06")] + bytes(eocd), "x.zip")
    assert "os.system" in called_globals(result)
    assert ("high", "zip entry hidden from the central directory") in problems(result)


# --- 7z and lz4 -------------------------------------------------------------------------------

def test_7z_members_are_scanned(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    path = tmp_path / "model.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writestr(b"{}", "config.json")
        archive.writestr(EVIL, "weights/tensor.bin")
    result = Walker().scan_file(path)
    assert "os.system" in called_globals(result)
    assert result.pickles[0].location == "model.7z!weights/tensor.bin" and result.problems == []


def test_encrypted_7z_is_not_inspected(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    for header_encryption in (False, True):
        path = tmp_path / f"enc{header_encryption}.7z"
        with py7zr.SevenZipFile(path, "w", password="secret") as archive:
            archive.set_encrypted_header(header_encryption)
            archive.writestr(EVIL, "data.pkl")
        result = Walker().scan_file(path)
        assert [(p.severity, p.title) for p in result.problems] == [("high", "7z archive not inspected: treated as unsafe")]


def test_7z_bomb_stops(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    path = tmp_path / "bomb.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writestr(EVIL + b"\0" * (32 << 20), "data.pkl")
    assert ("high", "compression bomb") in problems(Walker().scan_file(path))


def test_lz4_frames_are_scanned(tmp_path):
    lz4_frame = pytest.importorskip("lz4.frame")
    result = scan(tmp_path, lz4_frame.compress(pickle.dumps({"w": [1.0]}) + EVIL), "model.joblib")
    assert "os.system" in called_globals(result)
    broken = scan(tmp_path, lz4_frame.compress(EVIL * 100)[:-20] + b"\xff" * 20, "broken.lz4")
    assert [(p.severity, p.title) for p in broken.problems] == [("high", "lz4 stream not inspected: treated as unsafe")]


def test_scan_file_never_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(Walker, "_zip", lambda *a: 1 / 0)
    result = scan(tmp_path, make_zip([{"name": b"a", "data": b"x"}]))
    assert [(p.severity, p.title) for p in result.problems] == [("high", "file not inspected: treated as unsafe")]


# --- bounded memory ----------------------------------------------------------------------------

def big_bytes_pickle(size: int) -> tuple[bytes, bytes]:
    """Protocol 4: a dict whose one value is ``size`` bytes (BINBYTES8), then the payload as a stacked pickle."""
    blob = b"\x80\x04}\x94\x8c\x01w\x94\x8e" + struct.pack("<Q", size)
    return blob, b"\x94s." + EVIL


def test_giant_argument_in_zip_stays_small(tmp_path, monkeypatch):
    monkeypatch.setattr(pickles, "BIG_READ", 1 << 20)
    head, tail = big_bytes_pickle(64 << 20)
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    chunk = bytes(range(256)) * 4096  # 1 MiB, compressible but not a bomb
    deflated = z.compress(head) + b"".join(z.compress(chunk) for _ in range(64)) + z.compress(tail) + z.flush()
    crc = zlib.crc32(tail, zlib.crc32(chunk * 64, zlib.crc32(head)))
    usize = len(head) + (64 << 20) + len(tail)
    data = (struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), usize, 8, 0) + b"data.pkl" + deflated
            + struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(deflated), usize, 8, 0, 0, 0, 0, 0, 0)
            + b"data.pkl")
    data += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 54, len(data) - 54, 0)
    tracemalloc.start()
    try:
        result = scan(tmp_path, data, limits=Limits(spill_bytes=4 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "os.system" in called_globals(result) and result.problems == []
    assert peak < 24 << 20, peak  # the 64 MiB member and its 64 MiB argument were never held


def test_giant_string_and_line_are_skipped_not_read(monkeypatch):
    monkeypatch.setattr(pickles, "BIG_READ", 1 << 16)
    unicode8 = b"\x80\x04\x8d" + struct.pack("<Q", 1 << 17) + "é".encode() * (1 << 16) + b"0" + EVIL
    assert {g.qualified for g in analyze(unicode8).globals} == {"os.system"}
    float_line = b"F" + b"1" * (1 << 17) + b"\n0" + EVIL  # the unpickler reads on past the huge line: so do we
    analysis = analyze(io.BytesIO(float_line))
    assert [g.qualified for g in analysis.globals if g.called] == ["os.system"]


def test_total_bytes_limit_is_high(tmp_path):
    data = make_zip([{"name": b"a.pkl", "data": EVIL + b"\0" * (3 << 20), "method": 8}])
    result = scan(tmp_path, data, limits=Limits(max_total_bytes=1 << 20))
    assert ("high", "decompressed size limit reached") in problems(result)


# --- what a pickle calls -----------------------------------------------------------------------

def test_build_on_a_global_counts_as_a_call():
    # GLOBAL os.environ-like target, then BUILD with a state dict: setattr on the module object itself
    data = b"cmymod\nSettings\n}S'x'\nI1\nsb."
    refs = analyze(data).globals
    assert [(g.qualified, g.called) for g in refs] == [("mymod.Settings", True)]


def test_reconstructor_arguments_count_as_calls():
    data = b"ccopy_reg\n_reconstructor\n(cmymod\nEvil\ncbuiltins\nobject\nNtR."
    called = {g.qualified: g.called for g in analyze(data).globals}
    assert called == {"copy_reg._reconstructor": True, "mymod.Evil": True, "builtins.object": True}


def test_a_class_only_imported_is_not_called():
    data = b"\x80\x04\x8c\x05mymod\x94\x8c\x04Evil\x94\x93\x85."
    assert [(g.qualified, g.called) for g in analyze(data).globals] == [("mymod.Evil", False)]


def test_memo_indices_follow_the_unpickler():
    # PUT 0 (an unknown value), then MEMOIZE: the real unpickler gives it index 1, not 0
    data = (b"\x80\x04N\x94\x8c\x02os\x94\x8c\x06system\x94h\x01h\x02\x93\x8c\x01x\x85R.")
    refs = analyze(data).globals
    assert [(g.qualified, g.called, g.dynamic) for g in refs] == [("os.system", True, False)]
