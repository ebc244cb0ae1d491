#!/usr/bin/env python3
"""genai-bench against strut serving SmolLM2 on CPU, through the OpenAI API.

    python3 benches/genai_bench.py [--model-dir models/smollm2] [--scenario 'D(100,100)']
                                   [--concurrency 1 4] [--requests 24] [--minutes 2]

Steps: export the served model's tokenizer with `strut tokenizer export` (so
genai-bench builds prompts of exactly N tokens offline), start `strut serve`,
run genai-bench with `--api-backend vllm` (it speaks the OpenAI API and sends
`ignore_eos`, so output lengths are exact), then read its per-run JSON and
check what the issue asks: error rate 0, TTFT below end-to-end latency, and
every request's output token count equal to the requested one. Prints a
markdown summary table; exits 1 when a check fails.

Baseten's fork (basetenlabs/genai-bench, `--api-backend baseten`, which posts
OpenAI chat bodies, or `{"prompt", ...}` with `--prompt-format`, to the
model's predict URL `/production/predict`):

    GENAI_BENCH=.../genai-baseten-venv/bin/genai-bench python3 benches/genai_bench.py \
        --backend baseten [--prompt-format] [--no-stream]

With `--prompt-format` the model is served from a copy of its directory
whose config.yaml carries `model_metadata.tags: [openai-compatible]` (the
tag under which strut's predict answers a prompt in chat's shape, which is
what that client reads), and the client counts output tokens by
re-tokenizing the text, so lengths are reported, not checked.

genai-bench comes from ../shared/peers/setup.sh (~/.cache/strut-peers/genai-venv),
or set GENAI_BENCH to its executable. The strut binary is target/release/strut
(built with `cargo build --release -p strut` when missing).
"""
import argparse, glob, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import wait_ready  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strut_binary():
    path = os.path.join(ROOT, "target", "release", "strut")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "-p", "strut"], cwd=ROOT, check=True)
    return path


def genai_bench():
    exe = os.environ.get("GENAI_BENCH") or os.path.expanduser(
        "~/.cache/strut-peers/genai-venv/bin/genai-bench")
    if not os.path.exists(exe):
        sys.exit(f"genai-bench not found at {exe}: run ../shared/peers/setup.sh or set GENAI_BENCH")
    return exe


def served_model_id(base):
    import urllib.request
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
        return json.load(r)["data"][0]["id"]


def requested_output(scenario):
    """The output length a deterministic scenario asks for: D(in,out) -> out."""
    m = re.fullmatch(r"D\((\d+),(\d+)\)", scenario.replace(" ", ""))
    if not m:
        sys.exit(f"use a deterministic scenario D(in,out) so output lengths can be checked, got {scenario}")
    return int(m.group(1)), int(m.group(2))


def summarise(out_dir, want_in, want_out, exact=True):
    rows, failures = [], []
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "*_time_*s.json"), recursive=True)):
        with open(path) as f:
            data = json.load(f)
        agg, reqs = data["aggregated_metrics"], data["individual_request_metrics"]
        s = agg["stats"]
        label = f"c={agg['num_concurrency']}"
        if agg["error_rate"] != 0:
            failures.append(f"{label}: error rate {agg['error_rate']} {agg['error_codes_frequency']}")
        wrong = [r["num_output_tokens"] for r in reqs if r["num_output_tokens"] != want_out]
        if wrong and exact:
            failures.append(f"{label}: {len(wrong)} requests with output tokens != {want_out}: {wrong[:5]}")
        late = [r for r in reqs if not (r["ttft"] is not None and r["ttft"] < r["e2e_latency"])]
        if late:
            failures.append(f"{label}: {len(late)} requests without TTFT < e2e")
        rows.append({
            "concurrency": agg["num_concurrency"],
            "requests": agg["num_completed_requests"],
            "errors": agg["num_error_requests"],
            "in_tokens": s["num_input_tokens"]["mean"],
            "out_tokens": f"{s['num_output_tokens']['min']:.0f}-{s['num_output_tokens']['max']:.0f}",
            "ttft_p50": s["ttft"]["p50"], "ttft_p99": s["ttft"]["p99"],
            "e2e_p50": s["e2e_latency"]["p50"], "e2e_p99": s["e2e_latency"]["p99"],
            "tpot_p50": s["tpot"]["p50"],
            "out_tok_s": agg["mean_output_throughput_tokens_per_s"],
            "rps": agg["requests_per_second"],
        })
    if not rows:
        failures.append(f"genai-bench wrote no run files under {out_dir}")
    return rows, failures


def table(rows, scenario):
    lines = [
        f"| scenario | concurrency | requests | errors | input tokens (mean) | output tokens (min-max) "
        "| TTFT p50 / p99 (s) | e2e p50 / p99 (s) | TPOT p50 (ms) | output tokens/s | requests/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["concurrency"]):
        lines.append(
            f"| {scenario} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['in_tokens']:.0f} "
            f"| {r['out_tokens']} | {r['ttft_p50']:.3f} / {r['ttft_p99']:.3f} "
            f"| {r['e2e_p50']:.2f} / {r['e2e_p99']:.2f} | {1000 * r['tpot_p50']:.1f} "
            f"| {r['out_tok_s']:.1f} | {r['rps']:.2f} |")
    return "\n".join(lines)


def tagged_copy(model_dir, work):
    """The model directory with `openai-compatible` added to its tags."""
    copy = os.path.join(work, "model")
    shutil.copytree(model_dir, copy)
    path = os.path.join(copy, "config.yaml")
    text = open(path).read()
    tagged = text.replace("model_metadata:\n", "model_metadata:\n  tags: [openai-compatible]\n", 1)
    if tagged == text:
        sys.exit(f"{path}: no model_metadata to tag")
    open(path, "w").write(tagged)
    return copy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "smollm2"))
    ap.add_argument("--scenario", default="D(100,100)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=24, help="max requests per run")
    ap.add_argument("--minutes", type=int, default=2, help="max time per run (genai-bench takes whole minutes)")
    ap.add_argument("--keep", help="keep genai-bench's output in this directory")
    ap.add_argument("--backend", choices=["vllm", "baseten"], default="vllm")
    ap.add_argument("--prompt-format", action="store_true", help="baseten: {prompt} bodies, not chat")
    ap.add_argument("--no-stream", action="store_true", help="genai-bench's --disable-streaming")
    args = ap.parse_args()
    want_in, want_out = requested_output(args.scenario)

    strut, bench = strut_binary(), genai_bench()
    work = tempfile.mkdtemp(prefix="strut-genai-")
    tokdir = os.path.join(work, "tokenizer")
    subprocess.run([strut, "tokenizer", "export", args.model_dir, "--out", tokdir], check=True,
                   stdout=subprocess.DEVNULL)

    model_dir = tagged_copy(args.model_dir, work) if args.prompt_format else args.model_dir
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [strut, "serve", model_dir, "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "strut.log"), "w"))
    try:
        wait_ready(f"{base}/v2/health/ready", timeout=300)
        model = served_model_id(base)
        out_dir = args.keep or os.path.join(work, "out")
        api_base = base if args.backend == "vllm" else f"{base}/production/predict"
        cmd = [bench, "benchmark", "--api-backend", args.backend, "--api-base", api_base, "--api-key", "dummy",
               "--api-model-name", model, "--model-tokenizer", tokdir, "--task", "text-to-text",
               "--traffic-scenario", args.scenario,
               "--max-requests-per-run", str(args.requests), "--max-time-per-run", str(args.minutes),
               "--experiment-base-dir", out_dir, "--experiment-folder-name", "strut"]
        for c in args.concurrency:
            cmd += ["--num-concurrency", str(c)]
        if args.backend == "baseten":
            extra = {"temperature": 0, "ignore_eos": True}
            if args.prompt_format:
                extra["use_prompt_format"] = True
            cmd += ["--additional-request-params", json.dumps(extra)]
        if args.no_stream:
            cmd += ["--disable-streaming"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ENABLE_UI="false")
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env, cwd=work,
                       stdout=open(os.path.join(work, "genai-bench.out"), "w"), stderr=subprocess.STDOUT)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    rows, failures = summarise(out_dir, want_in, want_out, exact=not args.prompt_format)
    print(table(rows, args.scenario))
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures) + f"\n(logs in {work})")
        sys.exit(1)
    print(f"\nchecks: error rate 0, TTFT < e2e for every request, output tokens == {want_out} for every request")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
