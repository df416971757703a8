"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/seed-*): a tiny TokenFormer in both
weight formats and both namings (and quantized), and the fixtures' configs. Needs torch (for a real torch.save
file).

    python3 tools/fuzz_seeds.py
"""

import collections
import json
import os
import struct

import numpy as np
import torch
from make_fixtures import quantize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "fuzz", "corpus")
CONFIG = {"num_layers": 1, "hidden_size": 4, "num_attention_heads": 2, "qkv_slot_num": 2, "proj_slot_num": 2,
          "ffn_slot_num": 3, "max_position_embeddings": 8, "rotary_pct": 1.0, "norm_activation_type": "l2_norm_gelu"}
ROWS = 3
PROJS = ["query", "key", "value", "proj", "ffn"]


def tensors(authors):
    rng = np.random.default_rng(0)
    d, n = CONFIG["hidden_size"], {"query": 2, "key": 2, "value": 2, "proj": 2, "ffn": 3}
    w = collections.OrderedDict()
    w["sequential.0.word_embeddings.weight" if authors else "embed.weight"] = rng.standard_normal((ROWS, d))
    for p in PROJS:
        for kind in ("key", "value"):
            if authors:
                name = f"sequential.2.{'mlp' if p == 'ffn' else 'attention.' + p}.{kind}_param_tokens"
            else:
                name = f"blocks.0.{p}.{kind}_param_tokens"
            w[name] = rng.standard_normal((n[p], d))
    w["sequential.4.norm.weight" if authors else "final_norm.weight"] = np.ones(d)
    w["sequential.4.norm.bias" if authors else "final_norm.bias"] = np.zeros(d)
    return collections.OrderedDict((k, v.astype(np.float32)) for k, v in w.items())


def safetensors_bytes(w, dtype="F32"):
    """dtype F32 or F16, or q8 / q4: the parameter tokens quantized (values as Vᵀ), the embedding F16."""
    header, data = {}, b""
    for name, v in w.items():
        stored = dtype
        if dtype in ("q8", "q4"):
            if name.endswith("_param_tokens"):
                v = quantize(dtype, v.T if name.endswith("value_param_tokens") else v)
                name, stored = f"{name}.{dtype}", "U8"
            else:
                stored = "F16" if name == "embed.weight" else "F32"
        raw = (v.astype(np.float16) if stored == "F16" else v).tobytes()
        header[name] = {"dtype": stored, "shape": list(v.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def write(target, name, data):
    with open(os.path.join(CORPUS, target, f"seed-{name}"), "wb") as f:
        f.write(data)


def main():
    config = json.dumps(CONFIG).encode()
    tmp = os.path.join(CORPUS, "model.bin.tmp")
    torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in tensors(True).items()), tmp)
    pytorch = open(tmp, "rb").read()
    os.remove(tmp)
    seeds = [("project-f32", tensors(False), "F32"), ("authors-f16", tensors(True), "F16")]
    seeds += [("project-q8", tensors(False), "q8"), ("project-q4", tensors(False), "q4")]
    for name, w, dtype in seeds:
        st = safetensors_bytes(w, dtype)
        write("safetensors_index", name, st)
        write("load_model", f"{name}.safetensors", config + b"\0" + st)
        # First byte: chunk size - 1 (even: the stream knows the file's size).
        write("weights_stream", f"{name}.safetensors", bytes([6]) + st)
    write("pytorch_state_dict", "authors", pytorch)
    write("weights_stream", "authors-chunk1.bin", bytes([0]) + pytorch)
    write("weights_stream", "authors-chunk64.bin", bytes([63]) + pytorch)
    write("load_model", "authors.bin", config + b"\0" + pytorch)
    write("config", "tiny", config)
    for fixture in ("l2_norm_gelu", "gelu_l2_norm", "softmax"):
        write("config", fixture, open(os.path.join(REPO, "tests", "fixtures", fixture, "config.json"), "rb").read())
    write("config", "built-in", open(os.path.join(REPO, "models", "tokenformer-moby", "config.json"), "rb").read())


if __name__ == "__main__":
    main()
