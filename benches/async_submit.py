#!/usr/bin/env python3
"""Async submissions per second against a real `strut serve`, durability on.

Starts the release binary on models/echo with a fresh data directory, drives
`POST /async_predict` with wrk (64 connections, loopback) while the server's
own worker drains the queue, then checks that every accepted submission is a
row in the queue's SQLite file. Prints the figure against the baseline it is
measured by: the 2,000 submissions/s the project requires, and sync
`POST /predict` of the same model on the same server in the same run.

    python3 benches/async_submit.py                 # builds the release binary first
    python3 benches/async_submit.py --seconds 20 --durability normal

wrk comes from Debian (`apt-get install wrk`).
"""
import argparse, os, signal, sqlite3, subprocess, sys, tempfile

from benchlib import wait_ready, wrk, write_lua

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 2000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--durability", choices=["full", "normal"], default="full")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--port", type=int, default=18181)
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "strut"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "strut")
    with tempfile.TemporaryDirectory(prefix="strut-async-bench-") as data:
        lua = write_lua(os.path.join(data, "post.lua"))
        server = subprocess.Popen(
            [binary, "serve", os.path.join(ROOT, "models", "echo"), "--host", "127.0.0.1",
             "--port", str(args.port), "--data-dir", os.path.join(data, "data"),
             "--secrets-dir", os.path.join(data, "none"), "--async-durability", args.durability,
             # Measure acceptance, not the queue bound (100,000 by default).
             "--async-max-queued", "10000000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_ready(f"{base}/v1/models/model")
            wrk(f"{base}/async_predict", '{"model_input": {"x": 1}}', 8, 1, lua)  # warm-up
            sync = wrk(f"{base}/predict", '{"x": 1}', args.connections, args.seconds, lua)
            sub = wrk(f"{base}/async_predict", '{"model_input": {"x": 1}}', args.connections, args.seconds, lua)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        db = sqlite3.connect(os.path.join(data, "data", "queue.sqlite3"))
        rows = db.execute("SELECT count(*) FROM requests").fetchone()[0]
        done = db.execute("SELECT count(*) FROM requests WHERE status = 'SUCCEEDED'").fetchone()[0]
    print(f"async submissions ({args.durability} durability, {args.connections} connections, {args.seconds}s, "
          f"{os.cpu_count()} CPUs):")
    print(f"  POST /async_predict  {sub['rps']:>9.0f} /s  p99 {sub['p99']:.2f} ms  non-2xx {sub['non2xx']}  "
          f"socket errors: {sub['socket_errors'] or 'none'}")
    print(f"  baseline: target     {TARGET:>9.0f} /s  -> {sub['rps'] / TARGET:.2f}x the target")
    print(f"  baseline: POST /predict (sync, same model, same run) {sync['rps']:.0f} /s "
          f"-> async accepts at {sub['rps'] / sync['rps']:.2f}x the sync rate")
    print(f"  rows in the queue after the run: {rows} (>= {sub['total']} accepted in the timed run), "
          f"{done} already SUCCEEDED")
    ok = sub["rps"] >= TARGET and sub["non2xx"] == 0 and rows >= sub["total"]
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
