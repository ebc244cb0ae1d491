#!/usr/bin/env python3
"""Two builds of strut, side by side: the echo model (Truss predict),
MiniLM embeddings (OpenAI /v1/embeddings, 32 texts a request) and SmolLM2
completions (32 tokens, 4 requests at once), in interleaved
rounds so both see the same machine, medians reported with their ratio.

    python3 benches/ab.py                    # HEAD~1 (base) vs the working tree
    python3 benches/ab.py --base v0.1 --head HEAD --rounds 5 --seconds 5

A revision is built from a git worktree into the same target directory
(shared dependencies, so only strut's own crates build twice), and its
binary kept under target/ab/ by commit; wrk from Debian.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys

from benchlib import wait_ready, wrk, write_lua

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
TEXTS = [f"sentence number {i} about the weather, which is lovely today" for i in range(32)]
CASES = [
    # name, model dir, path, body, concurrency
    ("echo c=1", "models/echo", "/predict", '{"x": 1}', 1),
    ("echo c=64", "models/echo", "/predict", '{"x": 1}', 64),
    ("embed b=32 c=4", "models/minilm", "/v1/embeddings", json.dumps({"input": TEXTS}), 4),
    # The generation step (scheduler and CPU forward): 32 tokens, 4 at once.
    ("generate 32 c=4", "models/smollm2", "/v1/completions",
     json.dumps({"prompt": "Once upon a time", "max_tokens": 32, "ignore_eos": True,
                 "temperature": 0}), 4),
]


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def build(tree, out):
    sh(["cargo", "build", "--release", "--locked", "-q", "-p", "strut"], cwd=tree,
       env={**os.environ, "CARGO_TARGET_DIR": TARGET})
    shutil.copy(os.path.join(TARGET, "release", "strut"), out)


def build_rev(rev, out_dir):
    """The binary of a git revision, built once per commit."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    out = os.path.join(out_dir, f"strut-{sha[:12]}")
    if os.path.exists(out):
        return out
    worktree = os.path.join(out_dir, "tree")
    if os.path.exists(worktree):
        sh(["git", "worktree", "remove", "--force", worktree], cwd=ROOT)
    sh(["git", "worktree", "add", "--detach", worktree, sha], cwd=ROOT)
    try:
        build(worktree, out)
    finally:
        sh(["git", "worktree", "remove", "--force", worktree], cwd=ROOT)
    return out


def serve(binary, model, port):
    proc = subprocess.Popen(
        [binary, "serve", os.path.join(ROOT, model), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "RUST_LOG": "warn"}, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/v2/health/ready")
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="HEAD~1", help="git revision to compare against")
    ap.add_argument("--head", help="git revision to measure (default: the working tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sh(["apt-get", "install", "-y", "-q", "wrk"])
    out = os.path.join(TARGET, "ab")
    os.makedirs(out, exist_ok=True)
    base = build_rev(args.base, out)
    if args.head:
        head = build_rev(args.head, out)
    else:
        head = os.path.join(out, "strut-worktree")
        build(ROOT, head)
    lua = write_lua(os.path.join(out, "post.lua"))

    builds = {"base": base, "head": head}
    results = {(case[0], b): [] for case in CASES for b in builds}
    for round_ in range(args.rounds):
        for model in dict.fromkeys(c[1] for c in CASES):
            # Alternate which build goes first, so neither always runs warm.
            order = list(builds) if round_ % 2 == 0 else list(reversed(builds))
            for name in order:
                proc = serve(builds[name], model, 18090)
                try:
                    for case, case_model, path, body, conns in CASES:
                        if case_model != model:
                            continue
                        url = f"http://127.0.0.1:18090{path}"
                        wrk(url, body, conns, 1, lua)  # warm-up
                        r = wrk(url, body, conns, args.seconds, lua)
                        if r["non2xx"] or r["socket_errors"]:
                            raise SystemExit(f"{name} {case}: {r}")
                        results[(case, name)].append(r)
                        print(f"round {round_} {name:4} {case:15} {r['rps']:9.0f} req/s p99 {r['p99']:.2f} ms",
                              file=sys.stderr)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)

    print(f"\n{args.base} (base) vs {args.head or 'the working tree'} (head), medians of {args.rounds} interleaved rounds\n")
    print("| case | base req/s | head req/s | head/base | base p99 ms | head p99 ms |")
    print("|---|---|---|---|---|---|")
    for case, *_ in CASES:
        med = {b: statistics.median(r["rps"] for r in results[(case, b)]) for b in builds}
        p99 = {b: statistics.median(r["p99"] for r in results[(case, b)]) for b in builds}
        print(f"| {case} | {med['base']:.0f} | {med['head']:.0f} | {med['head'] / med['base']:.2f}x"
              f" | {p99['base']:.2f} | {p99['head']:.2f} |")


if __name__ == "__main__":
    main()
