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

Shared store (`--shared`): the same submissions against the embedded SQLite
store, PostgreSQL with one replica and PostgreSQL with three (wrk's
connections split over the three, their rates summed), each on a fresh
database; then completions/s of a queue whose model is the bottleneck
(models/stream, 50 ms a request, 2 async slots per replica; 600 requests
queued round-robin, then timed until the queue is empty), for the same
three set-ups. All in one run; PostgreSQL at `--pg` (psql makes and drops
the databases).

    python3 benches/async_submit.py                 # builds the release binary first
    python3 benches/async_submit.py --seconds 20 --durability normal
    python3 benches/async_submit.py --completion --rounds 3
    python3 benches/async_submit.py --shared --rounds 3

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


def start(binary, data, port, durability, extra=(), model="echo"):
    return subprocess.Popen(
        [binary, "serve", os.path.join(ROOT, "models", model), "--host", "127.0.0.1",
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


def psql(pg, sql, database="postgres"):
    out = subprocess.run(["psql", f"{pg}/{database}", "-tAc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Setup:
    """One store set-up: SQLite (one server) or PostgreSQL with `replicas` servers."""

    def __init__(self, binary, args, store, replicas, model="echo"):
        self.binary, self.args, self.store, self.replicas, self.model = binary, args, store, replicas, model
        self.name = "sqlite" if store == "sqlite" else f"postgres x{replicas}"

    def __enter__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="strut-async-shared-")
        self.db = None
        extra = []
        if self.store == "postgres":
            self.db = f"strut_bench_{os.getpid()}_{time.monotonic_ns()}"
            psql(self.args.pg, f"CREATE DATABASE {self.db}")
            extra = ["--store-url", f"{self.args.pg}/{self.db}"]
        self.servers, self.bases = [], []
        for i in range(self.replicas):
            port = self.args.port + i
            data = os.path.join(self.tmp.name, f"r{i}")
            os.makedirs(data)
            self.servers.append(start(self.binary, data, port, self.args.durability,
                                      [*extra, "--replica-id", f"r{i}"], self.model))
            self.bases.append(f"http://127.0.0.1:{port}")
        for base, server in zip(self.bases, self.servers):
            wait_ready(f"{base}/v1/models/model", proc=server)
        return self

    def __exit__(self, *exc):
        for server in self.servers:
            stop(server)
        if self.db:
            psql(self.args.pg, f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        self.tmp.cleanup()

    def rows(self):
        if self.db:
            return int(psql(self.args.pg, "SELECT count(*) FROM strut_async_requests", self.db))
        db = sqlite3.connect(os.path.join(self.tmp.name, "r0", "data", "queue.sqlite3"))
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]

    def submit(self, body, seconds, lua):
        """wrk against every replica at once, connections split; rates summed."""
        from concurrent.futures import ThreadPoolExecutor
        conns = max(1, self.args.connections // self.replicas)
        with ThreadPoolExecutor(self.replicas) as pool:
            runs = list(pool.map(lambda b: wrk(f"{b}/async_predict", body, conns, seconds, lua), self.bases))
        return {"rps": sum(r["rps"] for r in runs), "total": sum(r["total"] for r in runs),
                "non2xx": sum(r["non2xx"] for r in runs), "p99": max(r["p99"] for r in runs)}

    def post_many(self, body, n):
        """`n` submissions, round-robin over the replicas, 16 at a time."""
        from concurrent.futures import ThreadPoolExecutor

        def post(i):
            req = urllib.request.Request(f"{self.bases[i % self.replicas]}/async_predict", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 201
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(post, range(n)))

    def left(self):
        if self.db:
            return int(psql(self.args.pg, "SELECT count(*) FROM strut_async_requests "
                            "WHERE status IN ('QUEUED', 'IN_PROGRESS')", self.db))
        return remaining(self.bases[0])


def shared(binary, args, lua):
    setups = [("sqlite", 1), ("postgres", 1), ("postgres", 3)]
    names = ["sqlite", "postgres x1", "postgres x3"]
    sub = {n: [] for n in names}
    done = {n: [] for n in names}
    ok = True
    for round_ in range(args.rounds):
        for store, replicas in setups:
            with Setup(binary, args, store, replicas) as s:
                wrk(f"{s.bases[0]}/async_predict", '{"model_input": {"x": 1}}', 8, 1, lua)  # warm-up
                r = s.submit('{"model_input": {"x": 1}}', args.seconds, lua)
                rows = s.rows()
                ok &= r["non2xx"] == 0 and rows >= r["total"]
            sub[s.name].append(r["rps"])
            print(f"  round {round_ + 1}: {s.name:<12} submissions {r['rps']:7.0f} /s  p99 {r['p99']:.1f} ms  "
                  f"non-2xx {r['non2xx']}  rows {rows} >= accepted {r['total']}", flush=True)
        for store, replicas in setups:
            with Setup(binary, args, store, replicas, model="stream") as s:
                # 50 ms of model time each: the model, not the store, is the bottleneck.
                s.post_many(b'{"model_input": {"n": 1, "delay_ms": 50}}', args.drain_requests)
                left, t0 = s.left(), time.monotonic()
                while s.left() > 0:
                    if time.monotonic() - t0 > 600:
                        raise SystemExit("the queue did not drain in 10 minutes")
                    time.sleep(0.1)
                rate = left / (time.monotonic() - t0)
            done[s.name].append(rate)
            print(f"  round {round_ + 1}: {s.name:<12} completions {rate:7.1f} /s ({left} drained)", flush=True)
    med = {n: (statistics.median(sub[n]), statistics.median(done[n])) for n in names}
    base_sub, base_done = med["sqlite"]
    print(f"async queue, embedded and shared ({args.durability} durability for SQLite; PostgreSQL "
          f"synchronous_commit as configured; {args.connections} connections; {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs; medians):")
    for n in names:
        s_, d_ = med[n]
        print(f"  {n:<12} submissions {s_:7.0f} /s ({s_ / base_sub:.2f}x sqlite, {s_ / TARGET:.2f}x the "
              f"{TARGET:.0f}/s target)   completions {d_:6.1f} /s ({d_ / base_done:.2f}x sqlite)")
    return ok and med["postgres x1"][0] >= TARGET


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--durability", choices=["full", "normal"], default="full")
    ap.add_argument("--completion", action="store_true",
                    help="measure completions/s of a full queue, one claim per commit against batched")
    ap.add_argument("--rounds", type=int, default=3, help="--completion: measurements per mode")
    ap.add_argument("--fill-seconds", type=int, default=3, help="--completion: seconds of submissions")
    ap.add_argument("--shared", action="store_true",
                    help="SQLite against PostgreSQL with 1 and 3 replicas: submissions and completions")
    ap.add_argument("--drain-requests", type=int, default=600,
                    help="--shared: requests queued for the completions measurement")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432",
                    help="--shared: the PostgreSQL server (databases are made and dropped)")
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
        ok = shared(binary, args, lua) if args.shared else submission(binary, args, lua)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
