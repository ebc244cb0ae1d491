"""llama.cpp peer for benches/candle_generate.rs: the same prompt, greedy,
batch 1, best of 3; prints one JSON line. Build llama-cpp-python with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON":
these VMs advertise AMX but fault on it."""
import json
import os
import sys
import time

import numpy as np
from llama_cpp import Llama

gguf, prompt, n_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = Llama(model_path=gguf, n_ctx=1024, n_threads=os.cpu_count(), n_batch=512, verbose=False)
tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
best_ttft, best_tps = float("inf"), 0.0
for _ in range(3):
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    ttft = time.perf_counter() - start
    for _ in range(n_new - 1):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = (n_new - 1) / (time.perf_counter() - start - ttft)
    best_ttft, best_tps = min(best_ttft, ttft), max(best_tps, decode)
print(json.dumps({"ttft": best_ttft, "decode_tps": best_tps, "prompt_tokens": len(tokens)}))
