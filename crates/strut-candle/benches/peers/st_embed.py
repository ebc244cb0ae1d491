"""sentence-transformers peer for benches/candle_embeddings.rs: the same
sentences and the same three scenarios; prints one JSON line."""
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from sentence_transformers import SentenceTransformer, models

torch.set_num_threads(torch.get_num_threads())
d = sys.argv[1]
word = models.Transformer(d, max_seq_length=256)
model = SentenceTransformer(modules=[word, models.Pooling(384, pooling_mode="mean"), models.Normalize()], device="cpu")


def sentences(n):
    return [f"Sentence number {i} talks about the weather, the stadium and a guitar on stage tonight." for i in range(n)]


model.encode(sentences(4))
t = time.perf_counter()
for s in sentences(64):
    model.encode([s])
batch1 = 64 / (time.perf_counter() - t)
t = time.perf_counter()
for _ in range(8):
    model.encode(sentences(32), batch_size=32)
batch32 = 256 / (time.perf_counter() - t)
# A Python server answers concurrent clients from a thread pool, one encode each.
allsent = sentences(512)
t = time.perf_counter()
with ThreadPoolExecutor(64) as pool:
    list(pool.map(lambda s: model.encode([s]), allsent))
concurrent = 512 / (time.perf_counter() - t)
print(json.dumps({"batch1": batch1, "batch32": batch32, "concurrent64": concurrent}))
