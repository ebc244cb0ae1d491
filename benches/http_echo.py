#!/usr/bin/env python3
"""Echo over HTTP: strut vs the Truss server vs a bare axum handler (the floor).

Every figure comes from this one run on this machine: wrk at concurrency 1, 8
and 64 against each server in turn, on loopback, with the body {"x": 1}. Prints
a markdown table, the ratios the project targets, and strut's idle RSS.

    python3 benches/http_echo.py            # builds release binaries first
    python3 benches/http_echo.py --no-truss # without the Python peer

The Truss peer comes from ../shared/peers/setup.sh (PyPI only); wrk from Debian.
"""
import argparse, os, shutil, signal, subprocess, sys, time

from benchlib import rss_kib, wait_ready, wrk, write_lua

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.environ.get("PEERS_DIR", os.path.expanduser("~/.cache/strut-peers"))
BODY = '{"x": 1}'


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-truss", action="store_true")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()

    if not shutil.which("wrk"):
        sh(["apt-get", "install", "-y", "-q", "wrk"])
    sh(["cargo", "build", "--release", "-q", "-p", "strut", "-p", "axum-floor"], cwd=ROOT)
    if not args.no_truss and not os.path.exists(f"{PEERS}/apps/truss-echo"):
        sh(["bash", os.path.join(ROOT, "../shared/peers/setup.sh")])
    lua = write_lua(os.path.join(ROOT, "target", "bench-post.lua"))

    procs, results = [], {}
    try:
        strut = subprocess.Popen(
            [f"{ROOT}/target/release/strut", "serve", f"{ROOT}/models/echo", "--host", "127.0.0.1",
             "--port", "18080"], env={**os.environ, "RUST_LOG": "warn"}, stderr=subprocess.DEVNULL)
        procs.append(strut)
        floor = subprocess.Popen([f"{ROOT}/target/release/axum-floor", "18089"])
        procs.append(floor)
        servers = [("strut", "http://127.0.0.1:18080/predict", "http://127.0.0.1:18080/v1/models/model"),
                   ("axum floor", "http://127.0.0.1:18089/predict", None)]
        if not args.no_truss:
            truss = subprocess.Popen(
                [f"{PEERS}/truss-server-venv/bin/python", f"{PEERS}/run_truss_local.py"],
                cwd=f"{PEERS}/apps/truss-echo", env={**os.environ, "INFERENCE_SERVER_PORT": "18081"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(truss)
            servers.append(("truss", "http://127.0.0.1:18081/v1/models/model:predict",
                            "http://127.0.0.1:18081/v1/models/model"))
        wait_ready("http://127.0.0.1:18080/v1/models/model")
        time.sleep(1)
        idle_rss = rss_kib(strut.pid)
        for name, url, ready in servers:
            if ready:
                wait_ready(ready)
            wrk(url, BODY, 8, 2, lua)  # warm-up
            for c in (1, 8, 64):
                results[(name, c)] = wrk(url, BODY, c, args.seconds, lua)
                r = results[(name, c)]
                print(f"{name:10} c={c:<3} {r['rps']:>10.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms"
                      f"  non-2xx {r['non2xx']} {r['socket_errors']}", file=sys.stderr)
        loaded_rss = rss_kib(strut.pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    names = [s[0] for s in servers]
    print("\n| server | c=1 req/s | c=1 p99 | c=8 req/s | c=8 p99 | c=64 req/s | c=64 p50 | c=64 p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        r1, r8, r64 = (results[(n, c)] for c in (1, 8, 64))
        print(f"| {n} | {r1['rps']:,.0f} | {r1['p99']:.2f} ms | {r8['rps']:,.0f} | {r8['p99']:.2f} ms "
              f"| {r64['rps']:,.0f} | {r64['p50']:.2f} ms | {r64['p99']:.2f} ms |")
    s64, f64 = results[("strut", 64)], results[("axum floor", 64)]
    print(f"\nstrut / axum floor at c=64: {s64['rps'] / f64['rps']:.2f}x requests/s (target >= 0.80)")
    if "truss" in names:
        t64 = results[("truss", 64)]
        print(f"strut / truss at c=64: {s64['rps'] / t64['rps']:.1f}x requests/s (target >= 20x); "
              f"p99 {s64['p99']:.2f} ms vs {t64['p99']:.2f} ms = {s64['p99'] / t64['p99']:.3f}x (target <= 0.10)")
    print(f"strut idle RSS: {idle_rss / 1024:.1f} MiB (target < 30); after the run: {loaded_rss / 1024:.1f} MiB")
    failed = sum(r["non2xx"] for r in results.values())
    if failed:
        print(f"WARNING: {failed} non-2xx responses", file=sys.stderr)


if __name__ == "__main__":
    main()
