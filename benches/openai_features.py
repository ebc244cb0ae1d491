#!/usr/bin/env python3
"""What OpenAI's extra features cost on SmolLM2 (CPU): decode tok/s of the
same greedy request with and without them, interleaved on one server, medians.

    python3 benches/openai_features.py [--rounds 7] [--tokens 128]

Variants: plain; `logprobs` with `top_logprobs: 20` (the most a request can
ask); a JSON schema (`response_format`, an object holding one long string,
so the grammar masks every step and the length is still `--tokens`). Each
round runs every variant once, in turn, so the machine's drift hits all
alike. Then the compile time of a 50-property schema: a 1-token request
with a schema never seen, against the same request again (cached). The
strut binary is target/release/strut (built when missing).
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import wait_ready  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write a long story about a lighthouse keeper."}]
STORY = {"type": "object", "properties": {"story": {"type": "string", "minLength": 4000}},
         "required": ["story"], "additionalProperties": False}
VARIANTS = {
    "plain": {},
    "logprobs, top 20": {"logprobs": True, "top_logprobs": 20},
    "JSON schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY}}},
}


def fifty_properties(salt):
    props = {f"field_{salt}_{i}": [{"type": "string", "maxLength": 30}, {"type": "integer"},
                                   {"enum": ["a", "b", "c"]}, {"type": "array", "items": {"type": "number"}}][i % 4]
             for i in range(50)}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def post(base, body):
    req = urllib.request.Request(f"{base}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    started = time.perf_counter()
    reply = json.loads(urllib.request.urlopen(req, timeout=600).read())
    return reply, time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    strut = os.path.join(ROOT, "target", "release", "strut")
    if not os.path.exists(strut):
        subprocess.run(["cargo", "build", "--release", "-p", "strut"], cwd=ROOT, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([strut, "serve", os.path.join(ROOT, "models", "smollm2"), "--port", str(port),
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"{base}/v2/health/ready", timeout=300)
        rates = {name: [] for name in VARIANTS}
        for round in range(args.rounds + 1):
            for name, extra in VARIANTS.items():
                body = dict({"model": "smollm2-135m-instruct", "messages": MESSAGES, "temperature": 0,
                             "max_tokens": args.tokens, "ignore_eos": True}, **extra)
                reply, seconds = post(base, body)
                assert reply["usage"]["completion_tokens"] == args.tokens, reply["usage"]
                assert bool(reply["choices"][0]["logprobs"]) == ("logprobs" in extra), name
                if "response_format" in extra:
                    assert reply["choices"][0]["message"]["content"].startswith('{"story": "'), reply
                if round > 0:  # the first round warms up
                    rates[name].append(args.tokens / seconds)
        compile_ms = []
        for salt in range(5):
            body = {"model": "smollm2-135m-instruct", "messages": MESSAGES, "max_tokens": 1,
                    "response_format": {"type": "json_schema",
                                        "json_schema": {"name": "f", "schema": fifty_properties(salt)}}}
            fresh = post(base, body)[1]
            cached = post(base, body)[1]
            compile_ms.append((fresh - cached) * 1000)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    base_rate = statistics.median(rates["plain"])
    print(f"| variant | tok/s (median of {args.rounds}) | vs plain |\n|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x |")
    print(f"\n50-property schema: compile ~{statistics.median(compile_ms):.1f} ms "
          f"(median of 5: first request minus the same request cached)")


if __name__ == "__main__":
    main()
