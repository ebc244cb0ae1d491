#!/usr/bin/env python3
"""Continuous batching: strut against llama.cpp's server on the same GGUF,
both up at once and measured in turns, in one run.

    python3 benches/batching.py [--concurrency 1 4 8 16] [--requests 16] [--slots 16]
                                [--prompt-tokens 100] [--output-tokens 128] [--rounds 1]
    python3 benches/batching.py --prefix [--requests 32]   # the prefix-cache benchmark
    python3 benches/batching.py --base-binary OLD/strut    # and another build, in the same turns
    python3 benches/batching.py --steps 64 256 [--rounds 5]  # strut alone: c=1 and c=8 per step size

Both servers get streamed `/v1/completions` requests with `ignore_eos`, greedy,
`max_tokens` 128 and prompts of about 100 tokens that differ from their first
word, so neither server's prompt cache turns the run into a cache benchmark.
Per concurrency: aggregate output tok/s (all tokens over the level's wall
time), TTFT and TPOT p50/p99, errors; with `--rounds N`, every level N times,
the servers in turns each round, and each figure the median of its rounds
(single rounds of 16 requests swing by 20% on the 2-core VMs). llama-server
runs with as many slots as strut's batch (`--slots`) and 2 threads, its
context split between them.

`--prefix`: 32 requests at concurrency 4 sharing a ~500-token system prompt,
each with its own question, against strut with the prefix cache on and off
(two servers, measured in turns); prints TTFT p50/p99 of each.

`--steps`: strut servers with each `max_step_tokens`, measured in turns at
concurrency 1 and 8 (the workload above) for `--rounds` rounds; prints the
medians of tok/s and TTFT p50 and their c=8 / c=1 ratios.

The binaries: target/release/strut (built when missing) and llama-server from
../shared/peers/llama-server.sh (~/.cache/strut-peers), or $LLAMA_SERVER.
"""
import argparse, http.client, json, os, re, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import wait_ready  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("STRUT_MODELS_DIR", os.path.expanduser("~/.cache/strut/models"))
GGUF = os.path.join(MODELS, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")

WORDS = ("river mountain lantern copper meadow violin harbor pepper glacier orchard "
         "compass thunder ribbon saddle marble falcon cedar velvet anchor ember").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(i, words):
    """About `words` tokens of text, different from the first word on."""
    body = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words))
    return f"Story {i}: {body}. Continue the story:"


def stream(port, body):
    """One streamed completion: (ttft s, e2e s, output tokens) or an error string."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return f"HTTP {resp.status}: {resp.read()[:200]!r}"
        ttft, chunks, usage = None, 0, None
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens")
            for choice in event.get("choices", []):
                if choice.get("text"):
                    ttft = ttft or time.perf_counter() - start
                    chunks += 1
        return ttft, time.perf_counter() - start, usage or chunks
    except Exception as err:  # noqa: BLE001 - reported as the request's error
        return f"{type(err).__name__}: {err}"
    finally:
        conn.close()


def level(port, model, concurrency, requests, prompts, output_tokens):
    bodies = [{"model": model, "prompt": p, "max_tokens": output_tokens, "temperature": 0,
               "ignore_eos": True, "stream": True,
               "stream_options": {"include_usage": True}} for p in prompts[:requests]]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: stream(port, b), bodies))
    wall = time.perf_counter() - start
    ok = [r for r in results if not isinstance(r, str)]
    errors = [r for r in results if isinstance(r, str)]
    pct = lambda xs, q: statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]
    ttft = [r[0] for r in ok if r[0] is not None]
    tpot = [(r[1] - r[0]) / (r[2] - 1) for r in ok if r[0] is not None and r[2] > 1]
    tokens = sum(r[2] for r in ok)
    return {"tok_s": tokens / wall, "tokens": tokens, "errors": len(errors), "first_error": errors[:1],
            "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "tpot_p50": pct(tpot, 50), "tpot_p99": pct(tpot, 99),
            "min_tokens": min((r[2] for r in ok), default=0)}


class Server:
    def __init__(self, name, cmd, port, ready_path):
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(f"http://127.0.0.1:{port}{ready_path}", timeout=300, proc=self.proc)
        with urllib_open(f"http://127.0.0.1:{port}/v1/models") as r:
            self.model = json.load(r)["data"][0]["id"]

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def urllib_open(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=10)


def strut_server(model_dir, overrides=None, binary=None, name="strut"):
    if binary is None:
        binary = os.path.join(ROOT, "target", "release", "strut")
        if not os.path.exists(binary):
            subprocess.run(["cargo", "build", "--release", "-p", "strut"], cwd=ROOT, check=True)
    if overrides:
        tmp = tempfile.mkdtemp(prefix="bench-model-")
        text = open(os.path.join(model_dir, "config.yaml")).read()
        # Every setting lands beside max_step_tokens, whatever its value: an
        # override that matched nothing would compare a server with itself.
        line = re.compile(r"^    max_step_tokens: \d+\n", re.M)
        if not line.search(text):
            sys.exit(f"no max_step_tokens line in {model_dir}/config.yaml to override beside")
        for key, value in overrides.items():
            if key == "max_step_tokens":
                text = line.sub(f"    max_step_tokens: {value}\n", text)
            else:
                text = line.sub(lambda m: f"{m.group(0)}    {key}: {value}\n", text)
        open(os.path.join(tmp, "config.yaml"), "w").write(text)
        model_dir = tmp
    port = free_port()
    name += "".join(f" {k}={v}" for k, v in (overrides or {}).items())
    return Server(name, [binary, "serve", model_dir, "--host", "127.0.0.1", "--port", str(port)],
                  port, "/v2/health/ready")


def llama_server(slots, ctx_per_slot):
    binary = os.environ.get("LLAMA_SERVER") or os.path.expanduser(
        "~/.cache/strut-peers/llama-server/build/bin/llama-server")
    if not os.path.exists(binary):
        sys.exit(f"llama-server not found at {binary}: run ../shared/peers/llama-server.sh")
    port = free_port()
    return Server("llama-server", [binary, "-m", GGUF, "--host", "127.0.0.1", "--port", str(port),
                                   "-np", str(slots), "-c", str(slots * ctx_per_slot), "-t", "2"],
                  port, "/health")


def row(name, c, r):
    return (f"| {name} | {c} | {r['tok_s']:.1f} | {r['ttft_p50']*1000:.0f} / {r['ttft_p99']*1000:.0f} ms "
            f"| {r['tpot_p50']*1000:.1f} / {r['tpot_p99']*1000:.1f} ms | {r['errors']} |")


def batching(args):
    strut = strut_server(os.path.join(ROOT, "models", "smollm2"))
    servers = [strut]
    if args.base_binary:
        servers.append(strut_server(os.path.join(ROOT, "models", "smollm2"),
                                    binary=args.base_binary, name="strut-base"))
    llama = llama_server(args.slots, args.prompt_tokens + args.output_tokens + 128)
    servers.append(llama)
    # Every request of the run gets a prompt no server has seen.
    total = 2 + args.rounds * sum(max(args.requests, c * 2) for c in args.concurrency)
    prompts = [prompt(i, args.prompt_tokens * 2 // 3) for i in range(total)]
    runs, failed, used = {}, False, 2
    try:
        for s in servers:  # warm-up: first-touch of weights and buffers
            level(s.port, s.model, 2, 2, prompts, 8)
        for _ in range(args.rounds):
            for c in args.concurrency:
                n = max(args.requests, c * 2)
                batch, used = prompts[used:used + n], used + n
                for s in servers:
                    r = level(s.port, s.model, c, n, batch, args.output_tokens)
                    runs.setdefault((s.name, c), []).append(r)
                    print(row(s.name, c, r), flush=True)
                    if r["errors"] or r["min_tokens"] != args.output_tokens:
                        print(f"  {s.name}: {r['errors']} errors {r['first_error']}, min tokens {r['min_tokens']}")
                        failed = True
    finally:
        for s in servers:
            s.stop()
    # Each figure is its median over the rounds (errors: their sum).
    results = {key: {k: sum(r[k] for r in rs) if k == "errors" else statistics.median(r[k] for r in rs)
                     for k in ("tok_s", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "errors")}
               for key, rs in runs.items()}
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds")
    print("\n| server | concurrency | output tok/s | TTFT p50 / p99 | TPOT p50 / p99 | errors |")
    print("|---|---|---|---|---|---|")
    for c in args.concurrency:
        for s in servers:
            print(row(s.name, c, results[(s.name, c)]))
    base = results[("strut", args.concurrency[0])]
    print()
    for c in args.concurrency:
        s, l = results[("strut", c)], results[("llama-server", c)]
        print(f"c={c}: strut/llama-server tok/s {s['tok_s'] / l['tok_s']:.2f}x; strut tok/s vs "
              f"c={args.concurrency[0]} {s['tok_s'] / base['tok_s']:.2f}x; TTFT p50 vs c={args.concurrency[0]} "
              f"{s['ttft_p50'] / base['ttft_p50']:.2f}x")
        if args.base_binary:
            b = results[("strut-base", c)]
            print(f"     strut/strut-base tok/s {s['tok_s'] / b['tok_s']:.2f}x, "
                  f"TTFT p50 {s['ttft_p50'] / b['ttft_p50']:.2f}x")
    return 1 if failed else 0


def prefix(args):
    system = "You are a meticulous assistant. " + " ".join(
        f"Rule {k}: when asked about {WORDS[k % len(WORDS)]}, answer plainly and briefly." for k in range(38))
    questions = [f"Question {i}: what rhymes with {WORDS[i % len(WORDS)]}?" for i in range(args.requests)]
    prompts = [f"{system}\n{q}\nAnswer:" for q in questions]
    on = strut_server(os.path.join(ROOT, "models", "smollm2"), {"prefix_cache": "true"})
    off = strut_server(os.path.join(ROOT, "models", "smollm2"), {"prefix_cache": "false"})
    out = {}
    try:
        for s in (on, off):
            level(s.port, s.model, 1, 1, ["warm-up"], 4)
        for s in (on, off):
            out[s.name] = level(s.port, s.model, 4, args.requests, prompts, 16)
    finally:
        on.stop()
        off.stop()
    print("| strut | requests | TTFT p50 | TTFT p99 | errors |")
    print("|---|---|---|---|---|")
    for name, r in out.items():
        print(f"| {name} | {args.requests} | {r['ttft_p50']*1000:.0f} ms | {r['ttft_p99']*1000:.0f} ms | {r['errors']} |")
    a, b = out[on.name], out[off.name]
    print(f"\nTTFT p50 with the cache / without: {a['ttft_p50'] / b['ttft_p50']:.2f}x")
    return 1 if a["errors"] or b["errors"] else 0


def steps(args):
    servers = [strut_server(os.path.join(ROOT, "models", "smollm2"), {"max_step_tokens": n})
               for n in args.steps]
    levels = (1, 8)
    per_round = sum(max(args.requests, 2 * c) for c in levels)
    prompts = [prompt(i, args.prompt_tokens * 2 // 3) for i in range(2 + args.rounds * len(servers) * per_round)]
    results, used, failed = {}, 2, False
    try:
        for s in servers:
            level(s.port, s.model, 2, 2, prompts, 8)
        for _ in range(args.rounds):
            for s in servers:
                for c in levels:
                    n = max(args.requests, 2 * c)
                    r = level(s.port, s.model, c, n, prompts[used:used + n], args.output_tokens)
                    used += n
                    results.setdefault((s.name, c), []).append(r)
                    print(row(s.name, c, r), flush=True)
                    failed |= bool(r["errors"]) or r["min_tokens"] != args.output_tokens
    finally:
        for s in servers:
            s.stop()
    med = lambda name, c, key: statistics.median(r[key] for r in results[(name, c)])
    print(f"\nmedians of {args.rounds} rounds")
    print("| max_step_tokens | tok/s c=1 | tok/s c=8 | c=8 / c=1 | TTFT p50 c=1 | TTFT p50 c=8 | c=8 / c=1 |")
    print("|---|---|---|---|---|---|---|")
    for n, s in zip(args.steps, servers):
        t1, t8 = med(s.name, 1, "tok_s"), med(s.name, 8, "tok_s")
        f1, f8 = med(s.name, 1, "ttft_p50"), med(s.name, 8, "ttft_p50")
        print(f"| {n} | {t1:.1f} | {t8:.1f} | {t8 / t1:.2f}x | {f1 * 1000:.0f} ms | {f8 * 1000:.0f} ms | {f8 / f1:.2f}x |")
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--prefix", action="store_true")
    p.add_argument("--base-binary", help="another strut binary, measured in the same turns (A/B)")
    p.add_argument("--steps", type=int, nargs="+", help="compare strut with these max_step_tokens")
    p.add_argument("--rounds", type=int,
                   help="rounds, the servers in turns in each; medians reported (default 1, 5 with --steps)")
    args = p.parse_args()
    if args.prefix and args.requests == 16:
        args.requests = 32
    if args.rounds is None:
        args.rounds = 5 if args.steps else 1
    if args.steps:
        sys.exit(steps(args))
    sys.exit(prefix(args) if args.prefix else batching(args))


if __name__ == "__main__":
    main()
