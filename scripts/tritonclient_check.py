#!/usr/bin/env python3
"""tritonclient (the KServe V2 client most people use, from PyPI) against a
running `strut serve models/minilm`: readiness and metadata, then the same
texts embedded with tensors as JSON and with the binary data extension
(tritonclient's default) for inputs and outputs, which must agree.

    python3 scripts/tritonclient_check.py --url 127.0.0.1:8080

Exits 1 on the first failed check.
"""
import argparse
import sys

import numpy as np
import tritonclient.http as triton


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8080", help="host:port, no scheme")
    parser.add_argument("--model", default="model", help="the V2 model name (config's model_name)")
    args = parser.parse_args()
    client = triton.InferenceServerClient(url=args.url)
    checks = []

    def check(name, ok, detail=""):
        checks.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    check("server live", client.is_server_live())
    check("model ready", client.is_model_ready(args.model))
    texts = np.array([b"The cat sat on the mat.", "Zwölf Boxkämpfer".encode()], dtype=object)

    def embed(binary_in, binary_out):
        text = triton.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(texts, binary_data=binary_in)
        out = triton.InferRequestedOutput("embedding", binary_data=binary_out)
        result = client.infer(args.model, [text], outputs=[out])
        return result.as_numpy("embedding")

    as_json = embed(False, False)
    check("JSON tensors", as_json is not None and as_json.shape[0] == 2, f"shape {getattr(as_json, 'shape', None)}")
    for binary_in, binary_out in [(True, True), (True, False), (False, True)]:
        got = embed(binary_in, binary_out)
        same = got is not None and got.shape == as_json.shape and np.allclose(got, as_json, atol=1e-6)
        check(f"binary inputs={binary_in} outputs={binary_out}", same,
              f"dtype {getattr(got, 'dtype', None)}, max diff "
              f"{float(np.abs(got - as_json).max()) if same else 'n/a'}")
    norms = np.linalg.norm(as_json, axis=1)
    check("unit vectors", bool(np.allclose(norms, 1.0, atol=1e-4)), f"norms {norms}")
    if not all(checks):
        sys.exit(1)
    print(f"{len(checks)}/{len(checks)} checks passed")


if __name__ == "__main__":
    main()
