"""API benchmark: status-poll throughput and latency under load (poll memo off and on, plain and conditional GETs),
1 GiB upload vs sha256sum, API start-up time.

    .venv/bin/python bench/api_bench.py [--clients 50] [--seconds 15] [--upload-gib 1] [--configs embedded,postgres]

Runs the embedded configuration (SQLite + filesystem broker) and the production one
(PostgreSQL + Redis, needs scripts/ensure-services.sh) side by side in one run and writes
bench/results/api-<timestamp>.json. The load generator runs on the same machine as the
server, so latencies include its share of the CPU: compare ratios, not absolute numbers.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.stack import BIN, Stack, free_port  # noqa: E402  (the same process harness the e2e tests use)

PG_ADMIN_URL = os.environ.get("POISONSCAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("POISONSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/8")


def temp_pg_database() -> tuple[str, callable]:
    name = f"poisonscan_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False), drop


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wrk_load(base_url: str, key: str, scan_id: str, clients: int, seconds: int, etag: str | None = None) -> dict:
    """wrk (C, Debian package) as the load generator: it leaves more of the 2 cores to the server than Python would.
    With ``etag``: conditional GETs (If-None-Match), answered 304 while the scan does not change."""
    conditional = ["-H", f"If-None-Match: {etag}"] if etag else []
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-H", f"X-API-Key: {key}", *conditional,
                          f"{base_url}/v1/scans/{scan_id}"], capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(pct: str) -> float:
        value = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        return float(value.group(1)) * unit[value.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert not errors, out
    return {"generator": "wrk", "clients": clients, "seconds": seconds, "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": latency(50), "p99_ms": latency(99), "throughput_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload_vs_sha256sum(stack: Stack, api_pid: int, path: Path) -> dict:
    t = time.perf_counter()
    digest = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    sha_s = time.perf_counter() - t
    rss_before = rss_kb(api_pid, "VmRSS")
    t = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-T", str(path), "-H", "content-type: application/octet-stream",
                          "-H", f"X-API-Key: {stack.api_key}", f"{stack.base_url}/v1/artifacts?filename=big.bin"],
                         capture_output=True, text=True, check=True).stdout
    upload_s = time.perf_counter() - t
    assert json.loads(out)["sha256"] == digest, out
    size_mb = path.stat().st_size / 1e6
    return {"size_mb": size_mb, "sha256sum_mb_s": size_mb / sha_s, "upload_mb_s": size_mb / upload_s, "ratio_to_sha256sum": sha_s / upload_s,
            "api_rss_before_mb": rss_before / 1024, "api_peak_rss_mb": rss_kb(api_pid, "VmHWM") / 1024}


def startup_time(env: dict, repeats: int = 5) -> dict:
    """Seconds from spawning `poisonscan api` to its first /healthz answer."""
    samples = []
    for _ in range(repeats):
        port = free_port()
        t = time.perf_counter()
        proc = subprocess.Popen([BIN, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
        samples.append(time.perf_counter() - t)
        proc.terminate()
        proc.wait()
    code = "import time,sys; t=time.perf_counter(); from app.main import create_app; create_app(); print(time.perf_counter()-t, 'tensorflow' in sys.modules)"
    imp = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    # The floor: a Python process that only imports the frameworks the API is built on, and exits.
    floor = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import fastapi, sqlalchemy.orm, uvicorn"], check=True)
        floor.append(time.perf_counter() - t)
    return {"spawn_to_healthz_s_median": statistics.median(samples), "spawn_to_healthz_s_min": min(samples),
            "framework_import_floor_s_median": statistics.median(floor),
            "import_and_create_app_s": float(imp[0]), "tensorflow_imported": imp[1] == "True"}


def run_config(config: str, args, workdir: Path, big_file: Path | None) -> dict:
    """Polling with the API's poll memo off (POISONSCAN_POLL_CACHE_TTL_S=0: every poll reads the database, as before
    the memo existed) and on (the default), plain and conditional; then the upload and start-up on the default."""
    result = {"poll": {}}
    for variant, ttl in (("no memo", 0), ("memo (default)", None)):
        pg_url, drop = temp_pg_database() if config == "postgres" else (None, None)
        run_dir = workdir / f"{config}-{len(result['poll'])}"
        run_dir.mkdir()
        env = {"max_upload_bytes": 4 * 1024**3} | ({"poll_cache_ttl_s": ttl} if ttl is not None else {})
        stack = Stack(config, run_dir, pg_url, REDIS_URL, **env)
        try:
            stack.start(with_worker=False)  # the scan stays queued: every poll answers the same
            with stack.client() as client:
                ds = client.post("/v1/artifacts", params={"filename": "d.csv"}, content=b"a,b,label\n1,2,0\n3,4,1\n").json()["sha256"]
                scan = client.post("/v1/scans", json={"dataset": ds}).json()
                etag = client.get(f"/v1/scans/{scan['id']}").headers["etag"]
            result["poll"][variant] = {
                "plain": wrk_load(stack.base_url, stack.api_key, scan["id"], args.clients, args.seconds),
                "conditional (304)": wrk_load(stack.base_url, stack.api_key, scan["id"], args.clients, args.seconds, etag)}
            if ttl is None:
                if big_file:
                    result["upload"] = upload_vs_sha256sum(stack, stack.procs[0].pid, big_file)
                result["startup"] = startup_time(stack.env)
        finally:
            stack.stop()
            if drop:
                drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=15, help="load duration with wrk")
    parser.add_argument("--upload-gib", type=float, default=1.0, help="0 skips the upload measurement")
    parser.add_argument("--configs", default="embedded,postgres")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench/api_bench.py needs wrk as its load generator: apt-get install wrk")
    results = {"machine": {"cpus": os.cpu_count()}, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as tmp:
        workdir = Path(tmp)
        big = None
        if args.upload_gib > 0:
            big = workdir / "big.bin"
            with big.open("wb") as f:
                for _ in range(int(args.upload_gib * 1024)):
                    f.write(os.urandom(1 << 20))
        for config in args.configs.split(","):
            print(f"== {config}", file=sys.stderr)
            results[config] = run_config(config, args, workdir, big)
    out = REPO / "bench" / "results" / f"api-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\nraw results: {out}")


def render(r: dict) -> str:
    rows = ["| configuration | poll memo | request | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for config in ("embedded", "postgres"):
        for variant, kinds in r.get(config, {}).get("poll", {}).items():
            for kind, p in kinds.items():
                rows.append(f"| {config} | {variant} | {kind} | {p['throughput_rps']:.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |")
    rows += ["", "| configuration | upload MB/s | sha256sum MB/s | upload/sha256sum | API peak RSS MB | start-up s (spawn to /healthz) | "
             "floor s (import fastapi+sqlalchemy+uvicorn) | TF imported |", "|---|---|---|---|---|---|---|---|"]
    for config in ("embedded", "postgres"):
        if config not in r:
            continue
        u, s = r[config].get("upload", {}), r[config]["startup"]
        up = (f"{u['upload_mb_s']:.0f} | {u['sha256sum_mb_s']:.0f} | {u['ratio_to_sha256sum']:.2f} | {u['api_peak_rss_mb']:.0f}" if u else "- | - | - | -")
        rows.append(f"| {config} | {up} | {s['spawn_to_healthz_s_median']:.2f} | {s['framework_import_floor_s_median']:.2f} | {s['tensorflow_imported']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
