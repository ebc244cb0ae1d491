#!/usr/bin/env python3
"""Async submissions per second, and async completions per second, against a
real `strut serve`, durability on.

Submission (the default): starts the release binary on models/echo with a
fresh data directory, drives `POST /async_predict` with wrk (64 connections,
loopback) while the server's own worker drains the queue, then checks that
every accepted submission is a row in the queue's SQLite file. Prints the
figure against the baseline it is measured by: the 2,000 submissions/s the
project requires, and sync `POST /predict` of the same model on the same
server in the same run.

Completion (`--completion`): how fast the dispatcher works through a full
queue. For each claim mode, a fresh server is filled with wrk for a few
seconds; once submissions stop, the queue is drained while
`/production/async_queue_status` is polled, and completions/s is what was
left divided by the time to empty it. The old mode (`--async-claim-batch 1`,
one request claimed per store commit) and the batched mode (the default) are
measured alternately in the same run; medians and their ratio are printed.

    python3 benches/async_submit.py                 # builds the release binary first
    python3 benches/async_submit.py --seconds 20 --durability normal
    python3 benches/async_submit.py --completion --rounds 3

wrk comes from Debian (`apt-get install wrk`).
"""
import argparse, json, os, signal, sqlite3, statistics, subprocess, sys, tempfile, time
import urllib.request

from benchlib import wait_ready, wrk, write_lua

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 2000.0
# Claim modes compared by --completion: one request per commit (before
# batching) and strut's default.
MODES = [("one per commit", 1), ("batched", 64)]


def start(binary, data, port, durability, extra=()):
    return subprocess.Popen(
        [binary, "serve", os.path.join(ROOT, "models", "echo"), "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", os.path.join(data, "data"),
         "--secrets-dir", os.path.join(data, "none"), "--async-durability", durability,
         # Measure acceptance, not the queue bound (100,000 by default).
         "--async-max-queued", "10000000", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})


def stop(server):
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)


def remaining(base):
    with urllib.request.urlopen(f"{base}/production/async_queue_status", timeout=10) as r:
        status = json.load(r)
    return status["num_queued_requests"] + status["num_in_progress_requests"]


def drain_rate(binary, args, lua, batch):
    """Fills a fresh server's queue, then times how fast it empties."""
    with tempfile.TemporaryDirectory(prefix="strut-async-drain-") as data:
        server = start(binary, data, args.port, args.durability, ["--async-claim-batch", str(batch)])
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_ready(f"{base}/v1/models/model")
            wrk(f"{base}/async_predict", '{"model_input": {"x": 1}}', args.connections, args.fill_seconds, lua)
            left, t0 = remaining(base), time.monotonic()
            while remaining(base) > 0:
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the queue did not drain in 10 minutes")
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
        finally:
            stop(server)
    return left, elapsed


def completion(binary, args, lua):
    rates = {name: [] for name, _ in MODES}
    for round_ in range(args.rounds):
        for name, batch in MODES:
            left, elapsed = drain_rate(binary, args, lua, batch)
            rates[name].append(left / elapsed)
            print(f"  round {round_ + 1}: {name:<15} {left:>6} requests drained in {elapsed:6.2f}s "
                  f"-> {left / elapsed:7.0f} completions/s", flush=True)
    old, new = (statistics.median(rates[name]) for name, _ in MODES)
    print(f"async completions ({args.durability} durability, models/echo, 4 async slots, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs):")
    print(f"  baseline: one claim per commit (--async-claim-batch 1)  median {old:7.0f} /s")
    print(f"  batched claims (default)                              median {new:7.0f} /s "
          f"-> {new / old:.2f}x the baseline")


def submission(binary, args, lua):
    with tempfile.TemporaryDirectory(prefix="strut-async-bench-") as data:
        server = start(binary, data, args.port, args.durability)
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_ready(f"{base}/v1/models/model")
            wrk(f"{base}/async_predict", '{"model_input": {"x": 1}}', 8, 1, lua)  # warm-up
            sync = wrk(f"{base}/predict", '{"x": 1}', args.connections, args.seconds, lua)
            sub = wrk(f"{base}/async_predict", '{"model_input": {"x": 1}}', args.connections, args.seconds, lua)
        finally:
            stop(server)
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
    return sub["rps"] >= TARGET and sub["non2xx"] == 0 and rows >= sub["total"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--durability", choices=["full", "normal"], default="full")
    ap.add_argument("--completion", action="store_true",
                    help="measure completions/s of a full queue, one claim per commit against batched")
    ap.add_argument("--rounds", type=int, default=3, help="--completion: measurements per mode")
    ap.add_argument("--fill-seconds", type=int, default=3, help="--completion: seconds of submissions")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--port", type=int, default=18181)
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "strut"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "strut")
    with tempfile.TemporaryDirectory(prefix="strut-bench-lua-") as tmp:
        lua = write_lua(os.path.join(tmp, "post.lua"))
        if args.completion:
            completion(binary, args, lua)
            return
        ok = submission(binary, args, lua)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
