#!/usr/bin/env python3
"""strut on a GPU against PyTorch eager, in one run (scripts/gpu-check.sh runs it).

Makes its own models from a seed (nothing to download: the GPU machine has no
network), as safetensors with tokenizers: a small Llama and a 1.1B Llama
(TinyLlama's shape), and a BERT of MiniLM's shape. Then prints

- parity: strut's CUDA logits and embeddings vs strut's CPU forward, and both
  vs PyTorch (transformers, eager) on the same files;
- speed: decode tok/s at batch 1 and 8, prefill tok/s, embeddings/s at batch
  32, strut and PyTorch on the same GPU in the same run, and GPU memory after
  load vs the weights' size.

--dry-run does the steps that need no GPU and no PyTorch: the small shapes
through strut's CPU forward (the same CLI and HTTP calls), checked against a
numpy reference, so CI keeps the script and the CPU side of the parity
working between GPU loans.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

import numpy as np

SEED = 20261206
LLAMAS = {
    "llama-small": dict(hidden=256, inter=688, layers=2, heads=8, kv=4, vocab=4096),
    "llama-1b": dict(hidden=2048, inter=5632, layers=22, heads=32, kv=4, vocab=32000),
}
BERT = dict(hidden=384, inter=1536, layers=6, heads=12, vocab=30522)
GOALS = "goals: decode and embeddings >= 1x PyTorch; logits within 1e-2 (f16); cosine >= 0.9999; memory <= 1.3x weights"


# ---------------------------------------------------------------- models from a seed
def byte_tokenizer(path, vocab):
    """Byte-level BPE with no merges: one token per byte, padded to `vocab`
    entries with unreachable (but decodable) tokens, as a real vocabulary's size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    table = {"<s>": 0, "</s>": 1}
    for ch in alphabet:
        table[ch] = len(table)
    i = 0
    while len(table) < vocab:
        token = alphabet[i % 256] + alphabet[(i // 256) % 256] + alphabet[(i // 65536) % 256]
        table.setdefault(token, len(table))
        i += 1
    tok = Tokenizer(models.BPE(vocab=table, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(path)


def wordpiece_tokenizer(path, vocab):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    words += chars + ["##" + c for c in chars]
    words += [f"w{i:05d}" for i in range(vocab - len(words))]
    table = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordPiece(vocab=table, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(path)


def normal(rng, shape, dtype):
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)


def make_llama(dir, s, rng):
    from safetensors.numpy import save_file
    os.makedirs(dir, exist_ok=True)
    h, hd = s["hidden"], s["hidden"] // s["heads"]
    t = {"model.embed_tokens.weight": normal(rng, (s["vocab"], h), np.float16),
         "model.norm.weight": np.ones(h, np.float16),
         "lm_head.weight": normal(rng, (s["vocab"], h), np.float16)}
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(h, np.float16)
        t[p + "post_attention_layernorm.weight"] = np.ones(h, np.float16)
        t[p + "self_attn.q_proj.weight"] = normal(rng, (s["heads"] * hd, h), np.float16)
        t[p + "self_attn.k_proj.weight"] = normal(rng, (s["kv"] * hd, h), np.float16)
        t[p + "self_attn.v_proj.weight"] = normal(rng, (s["kv"] * hd, h), np.float16)
        t[p + "self_attn.o_proj.weight"] = normal(rng, (h, s["heads"] * hd), np.float16)
        t[p + "mlp.gate_proj.weight"] = normal(rng, (s["inter"], h), np.float16)
        t[p + "mlp.up_proj.weight"] = normal(rng, (s["inter"], h), np.float16)
        t[p + "mlp.down_proj.weight"] = normal(rng, (h, s["inter"]), np.float16)
    save_file(t, os.path.join(dir, "model.safetensors"))
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
               "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
               "num_attention_heads": s["heads"], "num_key_value_heads": s["kv"],
               "vocab_size": s["vocab"], "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu",
               "tie_word_embeddings": False, "torch_dtype": "float16"},
              open(os.path.join(dir, "config.json"), "w"))
    byte_tokenizer(os.path.join(dir, "tokenizer.json"), s["vocab"])


def make_bert(dir, s, rng):
    from safetensors.numpy import save_file
    os.makedirs(dir, exist_ok=True)
    h, f32 = s["hidden"], np.float32
    t = {"embeddings.word_embeddings.weight": normal(rng, (s["vocab"], h), f32),
         "embeddings.position_embeddings.weight": normal(rng, (512, h), f32),
         "embeddings.token_type_embeddings.weight": normal(rng, (2, h), f32),
         "embeddings.LayerNorm.weight": np.ones(h, f32), "embeddings.LayerNorm.bias": np.zeros(h, f32)}
    for i in range(s["layers"]):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            t[p + name + ".weight"] = normal(rng, (h, h), f32)
            t[p + name + ".bias"] = normal(rng, (h,), f32)
        t[p + "intermediate.dense.weight"] = normal(rng, (s["inter"], h), f32)
        t[p + "intermediate.dense.bias"] = normal(rng, (s["inter"],), f32)
        t[p + "output.dense.weight"] = normal(rng, (h, s["inter"]), f32)
        t[p + "output.dense.bias"] = normal(rng, (h,), f32)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"] = np.ones(h, f32)
            t[p + norm + ".bias"] = np.zeros(h, f32)
    save_file(t, os.path.join(dir, "model.safetensors"))
    json.dump({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": h,
               "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
               "num_attention_heads": s["heads"], "vocab_size": s["vocab"],
               "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
               "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
               "attention_probs_dropout_prob": 0.0, "pad_token_id": 0, "initializer_range": 0.02,
               "position_embedding_type": "absolute", "use_cache": True, "classifier_dropout": None,
               "torch_dtype": "float32"},
              open(os.path.join(dir, "config.json"), "w"))
    wordpiece_tokenizer(os.path.join(dir, "tokenizer.json"), s["vocab"])


def model_dir(root, name, cls, weights, gpu, dtype):
    """A strut model directory whose config points at shared weights."""
    d = os.path.join(root, f"{name}-{'gpu' if gpu else 'cpu'}")
    os.makedirs(d, exist_ok=True)
    accelerator = "H100" if gpu else "null"
    open(os.path.join(d, "config.yaml"), "w").write(f"""model_name: {name}
model_class_name: {cls}
model_metadata:
  candle:
    weights: {weights}
    model_id: {name}
    dtype: {dtype}
resources:
  accelerator: {accelerator}
  use_gpu: {'true' if gpu else 'false'}
runtime:
  predict_concurrency: 32
""")
    return d


# ---------------------------------------------------------------- numpy references
# Independent of strut and of PyTorch, in f64, with Hugging Face's
# semantics (rotate-half RoPE, erf GELU): the dry run's oracle, so CI checks
# the safetensors forward passes that the GPU run then compares with CUDA.
def load_np(dir):
    from safetensors.numpy import load_file
    return ({k: v.astype(np.float64) for k, v in load_file(os.path.join(dir, "model.safetensors")).items()},
            json.load(open(os.path.join(dir, "config.json"))))


def np_llama_logits(dir, tokens):
    w, c = load_np(dir)
    h, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, n, eps = h // nh, len(tokens), c["rms_norm_eps"]
    ang = np.arange(n)[:, None] / c["rope_theta"] ** (np.arange(0, hd, 2) / hd)[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None], np.sin(np.concatenate([ang, ang], -1))[:, None]

    def rope(q):
        return q * cos + np.concatenate([-q[..., hd // 2:], q[..., :hd // 2]], -1) * sin

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    x = w["model.embed_tokens.weight"][tokens]
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, w[p + "input_layernorm.weight"])
        q = rope((a @ w[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd))
        k = np.repeat(rope((a @ w[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd)), nh // nkv, 1)
        v = np.repeat((a @ w[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd), nh // nkv, 1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + causal
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", att, v).reshape(n, h) @ w[p + "self_attn.o_proj.weight"].T
        m = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"])[-1] @ w["lm_head.weight"].T


def np_bert_embedding(dir, ids):
    import math
    w, c = load_np(dir)
    h, nh, eps, n = c["hidden_size"], c["num_attention_heads"], c["layer_norm_eps"], len(ids)
    hd, erf = h // nh, np.vectorize(math.erf)

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    x = ln(w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
           + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(x, p + "attention.self." + m).reshape(n, nh, hd) for m in ("query", "key", "value"))
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = ln(x + dense(np.einsum("hts,shd->thd", att, v).reshape(n, h), p + "attention.output.dense"),
               p + "attention.output.LayerNorm")
        inner = dense(x, p + "intermediate.dense")
        x = ln(x + dense(inner * 0.5 * (1 + erf(inner / np.sqrt(2))), p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


# ---------------------------------------------------------------- strut
class Server:
    def __init__(self, bin, dir, log):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([bin, "serve", dir, "--host", "127.0.0.1", "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        self.log = log
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"strut serve {dir} exited; its log:\n" + open(log).read()[-4000:])
            try:
                urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2)
                return
            except Exception:
                time.sleep(0.5)
        sys.exit(f"strut serve {dir} was not ready in 600 s")

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.loads(r.read())
        return out, time.perf_counter() - started

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def strut_logits(bin, dir, tokens, cpu):
    cmd = [bin, "logits", dir, "--tokens", ",".join(map(str, tokens))] + (["--cpu", "--dtype", "f32"] if cpu else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}: {out.stderr[-4000:]}")
    reply = json.loads(out.stdout)
    return np.array(reply["logits"], np.float64), reply["device"], reply["dtype"]


def gpu_memory_used_mib():
    """The card's used memory: what a process added is the difference (a
    per-process reading can miss processes in another PID namespace)."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[0])


# ---------------------------------------------------------------- inputs
def text_prompt(rng, n):
    """n tokens: one per byte under the byte-level tokenizer."""
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz ")) for _ in range(n))


def sentences(rng, n, words, vocab):
    return [" ".join(f"w{int(i):05d}" for i in rng.integers(0, vocab - 100, words)) for _ in range(n)]


def completion(srv, model, prompt, max_tokens):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    out, seconds = srv.post("/v1/completions", body)
    assert out["usage"]["completion_tokens"] == max_tokens, out
    return seconds


def concurrent(n, fn):
    results, threads = [None] * n, []
    for i in range(n):
        threads.append(threading.Thread(target=lambda i=i: results.__setitem__(i, fn())))
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def median_of(runs, fn):
    fn()  # warm-up
    return statistics.median(fn() for _ in range(runs))


# ---------------------------------------------------------------- the check
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--work", help="keep the models here (default: a temporary folder)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu-check.json")
    args = ap.parse_args()
    dry = args.dry_run
    work = args.work or tempfile.mkdtemp(prefix="strut-gpu-check-")
    rng = np.random.default_rng(SEED)
    rows, results, failures = [], {}, []
    t0 = time.time()

    def row(*cells):
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(rows[-1], flush=True)

    shapes = ["llama-small"] + ([] if dry else ["llama-1b"])
    for name in shapes:
        make_llama(os.path.join(work, "w", name), LLAMAS[name], rng)
    make_bert(os.path.join(work, "w", "bert"), BERT, rng)
    print(f"models made in {time.time() - t0:.0f} s under {work}", flush=True)
    from tokenizers import Tokenizer

    torch = None
    if not dry:
        import torch
        from transformers import BertModel, LlamaForCausalLM
        print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)

    print("\n| check | strut | reference | result |\n|---|---|---|---|")
    # ---- logits
    for name in shapes:
        weights = os.path.join(work, "w", name)
        tok = Tokenizer.from_file(os.path.join(weights, "tokenizer.json"))
        tokens = tok.encode(text_prompt(rng, 24)).ids
        cpu_dir = model_dir(work, name, "LlamaGenerator", weights, False, "f32")
        cpu, device, _ = strut_logits(args.bin, cpu_dir, tokens, cpu=True)
        assert device == "cpu" and cpu.shape == (LLAMAS[name]["vocab"],) and np.isfinite(cpu).all()
        if name == "llama-small":
            d = float(np.abs(cpu - np_llama_logits(weights, tokens)).max())
            row(f"{name}: logits, strut CPU f32 vs numpy f64", f"max abs diff {d:.2e}", "1e-3",
                "ok" if d <= 1e-3 else "OVER")
            results[f"{name}_cpu_vs_numpy_max_abs"] = d
            failures.extend([] if d <= 1e-3 else [f"{name} CPU logits vs numpy"])
        if dry:
            continue
        gpu_dir = model_dir(work, name, "LlamaGenerator", weights, True, "f16")
        gpu, device, dtype = strut_logits(args.bin, gpu_dir, tokens, cpu=False)
        d = float(np.abs(gpu - cpu).max())
        row(f"{name}: logits, strut {device} {dtype} vs strut CPU f32", f"max abs diff {d:.2e}",
            "1e-2", "ok" if d <= 1e-2 else "OVER")
        results[f"{name}_cuda_vs_cpu_max_abs"] = d
        ids = torch.tensor([tokens], device="cuda")
        for dt, mine, label in ((torch.float16, gpu, "CUDA f16"), (torch.float32, cpu, "CPU f32")):
            ref = LlamaForCausalLM.from_pretrained(weights, dtype=dt, attn_implementation="eager").cuda()
            with torch.no_grad():
                theirs = ref(ids).logits[0, -1].float().cpu().numpy()
            del ref
            d = float(np.abs(mine - theirs).max())
            row(f"{name}: logits, strut {label} vs PyTorch {str(dt)[6:]}", f"max abs diff {d:.2e}",
                "1e-2", "ok" if d <= 1e-2 else "OVER")
            results[f"{name}_{label.replace(' ', '_')}_vs_torch_max_abs"] = d
        torch.cuda.empty_cache()

    # ---- embeddings
    bert_w = os.path.join(work, "w", "bert")
    texts = sentences(rng, 32, 48, BERT["vocab"])
    cpu_srv = Server(args.bin, model_dir(work, "bert", "SentenceEmbedder", bert_w, False, "f32"),
                     os.path.join(work, "bert-cpu.log"))
    cpu_vecs = np.array([e["embedding"] for e in cpu_srv.post("/v1/embeddings", {"model": "bert", "input": texts})[0]["data"]])
    cpu_srv.stop()
    norms = np.linalg.norm(cpu_vecs, axis=1)
    assert cpu_vecs.shape == (32, BERT["hidden"]) and np.allclose(norms, 1, atol=1e-4), norms
    tok = Tokenizer.from_file(os.path.join(bert_w, "tokenizer.json"))
    reference = np.array([np_bert_embedding(bert_w, tok.encode(t).ids) for t in texts[:4]])
    cos = float((cpu_vecs[:4] * reference).sum(1).min())
    row("bert: embeddings, strut CPU f32 vs numpy f64 (4 texts)", f"min cosine {cos:.7f}", "0.9999",
        "ok" if cos >= 0.9999 else "UNDER")
    results["bert_cpu_vs_numpy_min_cosine"] = cos
    failures.extend([] if cos >= 0.9999 else ["bert CPU embeddings vs numpy"])
    if not dry:
        gpu_dir = model_dir(work, "bert", "SentenceEmbedder", bert_w, True, "f16")
        srv = Server(args.bin, gpu_dir, os.path.join(work, "bert-gpu.log"))
        gpu_vecs = np.array([e["embedding"] for e in srv.post("/v1/embeddings", {"model": "bert", "input": texts})[0]["data"]])
        cos = float((gpu_vecs * cpu_vecs).sum(1).min())
        row("bert: embeddings, strut CUDA f16 vs strut CPU f32", f"min cosine {cos:.6f}", "0.9999",
            "ok" if cos >= 0.9999 else "UNDER")
        results["bert_cuda_vs_cpu_min_cosine"] = cos
        tok.enable_padding(pad_id=0)
        enc = tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], device="cuda")
        mask = torch.tensor([e.attention_mask for e in enc], device="cuda")

        def torch_embed(model):
            with torch.no_grad():
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            pooled = (hidden * m).sum(1) / m.sum(1)
            return torch.nn.functional.normalize(pooled, dim=-1)

        ref32 = BertModel.from_pretrained(bert_w, add_pooling_layer=False, attn_implementation="eager").cuda().eval()
        theirs = torch_embed(ref32).cpu().numpy()
        cos = float((cpu_vecs * theirs).sum(1).min())
        row("bert: embeddings, strut CPU f32 vs PyTorch f32", f"min cosine {cos:.6f}", "0.9999",
            "ok" if cos >= 0.9999 else "UNDER")
        results["bert_cpu_vs_torch_min_cosine"] = cos
        # ---- embeddings speed, batch 32, same dtype on both sides
        ref16 = ref32.half()
        strut_s = median_of(5, lambda: srv.post("/v1/embeddings", {"model": "bert", "input": texts})[1])

        def torch_once():
            torch.cuda.synchronize()
            started = time.perf_counter()
            torch_embed(ref16)
            torch.cuda.synchronize()
            return time.perf_counter() - started

        torch_s = median_of(5, torch_once)
        row("bert: embeddings/s at batch 32 (f16)", f"{32 / strut_s:.0f}", f"{32 / torch_s:.0f}",
            f"{torch_s / strut_s:.2f}x")
        results["bert_embeddings_per_s"] = [32 / strut_s, 32 / torch_s]
        srv.stop()
        del ref32, ref16
        torch.cuda.empty_cache()
        speed(args, work, rng, row, results, torch, LlamaForCausalLM)

    print(f"\n{GOALS}\nwall time {time.time() - t0:.0f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        json.dump({"rows": rows, "results": results}, open(os.path.join(args.out, "gpu-check.json"), "w"), indent=1)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


def speed(args, work, rng, row, results, torch, LlamaForCausalLM):
    name, new = "llama-1b", 128
    weights = os.path.join(work, "w", name)
    weight_bytes = os.path.getsize(os.path.join(weights, "model.safetensors"))
    torch.cuda.empty_cache()
    before = gpu_memory_used_mib()
    srv = Server(args.bin, model_dir(work, name, "LlamaGenerator", weights, True, "f16"),
                 os.path.join(work, f"{name}-gpu.log"))
    mib = gpu_memory_used_mib() - before
    ratio = mib * 2**20 / weight_bytes
    row(f"{name}: GPU memory after load", f"{mib} MiB", f"weights {weight_bytes / 2**20:.0f} MiB",
        f"{ratio:.2f}x")
    results["llama_1b_memory_ratio"] = ratio
    prompt = text_prompt(rng, 128)
    long_prompt = text_prompt(rng, 1024)
    one = median_of(3, lambda: completion(srv, name, prompt, new))
    eight = median_of(2, lambda: concurrent(8, lambda: completion(srv, name, prompt, new)))
    prefill = median_of(3, lambda: completion(srv, name, long_prompt, 1))
    srv.stop()

    ref = LlamaForCausalLM.from_pretrained(weights, dtype=torch.float16, attn_implementation="eager").cuda().eval()

    def generate(batch, n, length=128):
        ids = torch.randint(2, 200, (batch, length), device="cuda")
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - started

    t_one = median_of(3, lambda: generate(1, new))
    t_eight = median_of(2, lambda: generate(8, new))
    t_prefill = median_of(3, lambda: generate(1, 1, 1024))
    for label, ours, theirs, tokens in (
            ("decode tok/s, batch 1 (128 prompt + 128 new)", one, t_one, new),
            ("decode tok/s, batch 8", eight, t_eight, 8 * new),
            ("prefill tok/s (1024-token prompt)", prefill, t_prefill, 1024)):
        row(f"{name}: {label}", f"{tokens / ours:.0f}", f"{tokens / theirs:.0f}", f"{theirs / ours:.2f}x")
        results[f"llama_1b_{label.split(' (')[0].replace(' ', '_').replace('/', '_per_').replace(',', '')}"] = [
            tokens / ours, tokens / theirs]


if __name__ == "__main__":
    main()
