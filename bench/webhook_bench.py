"""Webhook benchmark: delivery latency after a scan's result commits, and a receiver that is down for minutes.

    .venv/bin/python bench/webhook_bench.py [--scans 100] [--down-s 300] [--configs embedded,postgres]

For each configuration, real processes (tests/stack.py: the API and a worker with its dispatcher thread) and a real
local receiver:
1. ``--scans`` scans of a small safetensors model, submitted together; latency = the receiver's clock at receipt minus
   the scan's ``finished_at`` (set in the transaction that stores the result and writes the event): p50/p99/max.
2. The receiver goes away (its port closed) for ``--down-s`` seconds while 20 more scans run, then comes back on the
   same port: how long until every event arrives, attempts per delivery (from GET /v1/webhooks/{id}/deliveries), and
   whether the scans ran as fast as in phase 1 (the dispatcher's retries must not slow them).
Default backoff (5 s doubling) and timeout; the dispatcher polls every POISONSCAN_WEBHOOK_POLL_S (0.25 s default).
Writes bench/results/webhooks-<timestamp>.json.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.api_bench import REDIS_URL, percentile, temp_pg_database  # noqa: E402
from tests.stack import Stack, free_port, wait_for_scan  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402


def run_scans(client, sha: str, count: int) -> list[dict]:
    ids = [client.post("/v1/scans", json={"model": sha}).json()["id"] for _ in range(count)]
    return [wait_for_scan(client, i, timeout=max(120, count * 10)) for i in ids]


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_config(config: str, args, workdir: Path) -> dict:
    pg_url, drop = temp_pg_database() if config == "postgres" else (None, None)
    model = workdir / "model.safetensors"
    save_file({"dense/kernel": np.ones((4, 3), np.float32)}, str(model))
    stack = Stack(config, workdir / config, pg_url, REDIS_URL, webhook_allow_private="true", log_level="WARNING")
    (workdir / config).mkdir()
    port = free_port()
    try:
        stack.start()
        with stack.client() as client, Receiver(port=port) as receiver:
            hook = client.post("/v1/webhooks", json={"url": receiver.url}).json()
            sha = client.post("/v1/artifacts", params={"filename": "m.safetensors"}, content=model.read_bytes(),
                              headers={"content-type": "application/octet-stream"}).json()["sha256"]
            scans = run_scans(client, sha, args.scans)
            got = receiver.wait_for(args.scans, 60)
            arrived = {json.loads(r.body)["data"]["scan_id"]: r.at for r in got}
            latencies = [arrived[s["id"]] - ts(s["timings"]["finished_at"]) for s in scans if s["id"] in arrived]
            run_s_up = statistics.median(s["timings"]["run_s"] for s in scans)
        print(f"  {config}: {len(latencies)}/{args.scans} delivered; receiver down for {args.down_s} s", file=sys.stderr)
        with stack.client() as client:
            down_scans = run_scans(client, sha, 20)
            wait_left = args.down_s - (time.time() - min(ts(s["timings"]["created_at"]) for s in down_scans))
            time.sleep(max(0.0, wait_left))
            back_at = time.time()
            with Receiver(port=port) as receiver:
                got = receiver.wait_for(20, args.down_s + 3600)
                recovered_s = max(r.at for r in got) - back_at
                deliveries = client.get(f"/v1/webhooks/{hook['id']}/deliveries",
                                        params={"limit": 100}).json()["items"]
        down_ids = {s["id"] for s in down_scans}
        attempts = [d["attempts"] for d in deliveries if d["scan_id"] in down_ids]
        return {
            "delivered": f"{len(latencies)}/{args.scans}",
            "latency_ms": {"p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
                           "max": max(latencies) * 1000},
            "receiver_down": {"down_s": args.down_s, "delivered": f"{len({json.loads(r.body)['data']['scan_id'] for r in got} & down_ids)}/20",
                              "last_event_after_back_s": recovered_s, "attempts_per_delivery": [min(attempts), max(attempts)],
                              "states": sorted({d["status"] for d in deliveries if d["scan_id"] in down_ids}),
                              "scan_run_s_median_while_down": statistics.median(s["timings"]["run_s"] for s in down_scans),
                              "scan_run_s_median_while_up": run_s_up},
        }
    finally:
        stack.stop()
        if drop:
            drop()


def render(results: dict) -> str:
    rows = ["| configuration | delivered | p50 ms | p99 ms | max ms | down s | delivered after | last event after back (s) "
            "| attempts/delivery | scan run s (down vs up) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for config, r in results.items():
        if config in ("args",):
            continue
        lat, down = r["latency_ms"], r["receiver_down"]
        rows.append(f"| {config} | {r['delivered']} | {lat['p50']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | "
                    f"{down['down_s']} | {down['delivered']} | {down['last_event_after_back_s']:.1f} | "
                    f"{down['attempts_per_delivery'][0]}–{down['attempts_per_delivery'][1]} | "
                    f"{down['scan_run_s_median_while_down']:.2f} vs {down['scan_run_s_median_while_up']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--down-s", type=int, default=300)
    parser.add_argument("--configs", default="embedded,postgres")
    args = parser.parse_args()
    results: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="poisonscan-webhook-bench-") as tmp:
        for config in args.configs.split(","):
            print(f"== {config}", file=sys.stderr)
            results[config] = run_config(config, args, Path(tmp))
    out = REPO / "bench" / "results" / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
