#!/usr/bin/env python3
"""Writes a random TokenFormer of an official size (the released models' shapes) as a model folder:
config.json (authors' keys), model.safetensors (project names), tokenizer.json (GPT-NeoX-20B).
For measuring loading and memory on realistic shapes without downloading the released weights.

    python3 tools/synthetic_model.py --size 150m --out /tmp/tf150m [--dtype f16|f32]
"""

import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: layers, hidden, heads, qkv/proj slots, ffn slots (as src/model.rs OFFICIAL_SIZES)
SIZES = {"150m": (12, 768, 12, 768, 3072), "450m": (24, 1024, 16, 1024, 4096),
         "900m": (32, 1280, 16, 1280, 5120), "1.5b": (40, 1536, 16, 1536, 6144)}
EMBEDDING_ROWS = 50304  # the released models' padded vocabulary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=SIZES, default="150m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "..", "shared", "tokenizers", "gpt-neox-20b.json"))
    args = ap.parse_args()
    layers, d, heads, slots, ffn = SIZES[args.size]
    os.makedirs(args.out, exist_ok=True)
    config = {"num_layers": layers, "hidden_size": d, "num_attention_heads": heads, "max_position_embeddings": 2048,
              "rotary_pct": 0.25, "rotary_emb_base": 10000, "norm": "layernorm_nonparam", "final_norm": "layernorm",
              "no_weight_tying": False, "norm_activation_type": "l2_norm_gelu", "layernorm_epsilon": 1e-5,
              "qkv_slot_num": slots, "proj_slot_num": slots, "ffn_slot_num": ffn, "vocab_size": EMBEDDING_ROWS}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    rng = np.random.default_rng(1234)
    dtype = np.float16 if args.dtype == "f16" else np.float32
    std = 1 / np.sqrt(d)
    tensors = {"embed.weight": rng.normal(0, std, (EMBEDDING_ROWS, d)).astype(dtype)}
    for j in range(layers):
        for proj, n in [("query", slots), ("key", slots), ("value", slots), ("proj", slots), ("ffn", ffn)]:
            for kv in ("key", "value"):
                tensors[f"blocks.{j}.{proj}.{kv}_param_tokens"] = rng.normal(0, std, (n, d)).astype(dtype)
    tensors["final_norm.weight"] = np.ones(d, dtype)
    tensors["final_norm.bias"] = np.zeros(d, dtype)
    save_file(tensors, os.path.join(args.out, "model.safetensors"))
    n = sum(t.size for t in tensors.values())
    print(f"{args.out}: {n / 1e6:.1f}M parameters, {os.path.getsize(os.path.join(args.out, 'model.safetensors')) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
