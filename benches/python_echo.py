#!/usr/bin/env python3
"""The echo model.py (tests/truss-fixtures/echo) under strut's Python backend
and under Truss's own server, and strut's Rust echo for the cost of the
Python hop: wrk at concurrency 1, 8 and 64 on loopback, the three servers in
interleaved rounds, medians.

    python3 benches/python_echo.py               # builds strut (release) first
    python3 benches/python_echo.py --rounds 3 --seconds 5

Truss 0.18.35's server comes from ../shared/peers/setup.sh (PyPI only), and
the fixture becomes its app folder through ../shared/peers/truss-app.sh;
wrk from Debian.
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, time

from benchlib import wait_ready, wrk, write_lua

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "peers")
PEERS = os.environ.get("PEERS_DIR", os.path.expanduser("~/.cache/strut-peers"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
FIXTURE = os.path.join(ROOT, "tests", "truss-fixtures", "echo")
BODY = '{"x": 1}'


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sh(["apt-get", "install", "-y", "-q", "wrk"])
    if not os.path.exists(f"{PEERS}/run_truss_local.py"):
        sh(["bash", os.path.join(SHARED, "setup.sh")])
    sh(["cargo", "build", "--release", "--locked", "-q", "-p", "strut"], cwd=ROOT)
    app = sh(["bash", os.path.join(SHARED, "truss-app.sh"), FIXTURE], capture_output=True,
             text=True).stdout.strip()
    lua = write_lua(os.path.join(TARGET, "bench-post.lua"))
    strut = os.path.join(TARGET, "release", "strut")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    servers = {
        "strut model.py": ([strut, "serve", FIXTURE, "--host", "127.0.0.1", "--port", "18100"], None,
                           "http://127.0.0.1:18100/predict", "http://127.0.0.1:18100/v1/models/model"),
        "truss model.py": ([f"{PEERS}/truss-server-venv/bin/python", f"{PEERS}/run_truss_local.py"], app,
                           "http://127.0.0.1:18102/v1/models/model:predict",
                           "http://127.0.0.1:18102/v1/models/model"),
        "strut Rust echo": ([strut, "serve", os.path.join(ROOT, "models", "echo"), "--host", "127.0.0.1",
                             "--port", "18101"], None,
                            "http://127.0.0.1:18101/predict", "http://127.0.0.1:18101/v1/models/model"),
    }
    env = {**os.environ, "RUST_LOG": "warn", "INFERENCE_SERVER_PORT": "18102"}
    results = {(name, c): [] for name in servers for c in (1, 8, 64)}
    for round_ in range(args.rounds):
        for name, (cmd, cwd, url, ready) in servers.items():
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, **quiet)
            try:
                wait_ready(ready, timeout=180)
                wrk(url, BODY, 8, 2, lua)  # warm-up
                for c in (1, 8, 64):
                    r = wrk(url, BODY, c, args.seconds, lua)
                    if r["non2xx"] or r["socket_errors"]:
                        raise SystemExit(f"{name} c={c}: {r}")
                    results[(name, c)].append(r)
                    print(f"round {round_} {name:16} c={c:<3} {r['rps']:9.0f} req/s p50 {r['p50']:.2f} ms "
                          f"p99 {r['p99']:.2f} ms", file=sys.stderr)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            time.sleep(1)

    med = lambda name, c, key: statistics.median(r[key] for r in results[(name, c)])
    print(f"\necho model.py, medians of {args.rounds} interleaved rounds ({args.seconds} s each)\n")
    print("| c | strut model.py req/s | truss req/s | strut/truss | strut p99 ms | truss p99 ms | p99 strut/truss | Rust echo req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for c in (1, 8, 64):
        s, t, r = (med(n, c, "rps") for n in servers)
        sp, tp = med("strut model.py", c, "p99"), med("truss model.py", c, "p99")
        print(f"| {c} | {s:.0f} | {t:.0f} | {s / t:.2f}x | {sp:.2f} | {tp:.2f} | {sp / tp:.2f}x | {r:.0f} |")
    hop = (med("strut model.py", 1, "p50") - med("strut Rust echo", 1, "p50")) * 1000
    print(f"\nthe Python hop at c=1 (p50 model.py - p50 Rust echo): {hop:.0f} us per request")


if __name__ == "__main__":
    main()
