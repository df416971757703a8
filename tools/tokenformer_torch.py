"""TokenFormer in PyTorch, exactly the computation of docs/numerics.md, "What is computed" (used for training the default model).

Pattention:  S = X K^T (no scale);  Theta = gelu_erf(S / ||S||_2 * sqrt(n));  out = Theta V
Block:       a = LN(x) (no affine, eps 1e-5); q,k,v = P(a); contiguous heads; partial NeoX rotate-half RoPE on
             the first int(hd * rotary_pct) dims of q and k; causal softmax(q k^T / sqrt(hd)) v;
             x += Pproj(o); x += Pffn(LN(x))
Head:        LN with weight + bias, logits = h E^T (tied).

Incremental decoding: `forward(ids, cache=KVCache(num_layers))` keeps every block's RoPE'd keys and values, so a
later call runs only the new tokens at positions cache.len, cache.len + 1, ...; `last_only=True` computes the head for
the last position only. The arithmetic per position is the same as a full forward over the whole context.

The L2 norm has no epsilon, as in the authors' code. (Training never produced a zero score row, so no clamp was
needed; a row of exact zeros would give NaN, as in the official implementation.)
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PROJS = ("query", "key", "value", "proj", "ffn")


class Pattention(nn.Module):
    def __init__(self, n, d_in, d_out):
        super().__init__()
        self.key_param_tokens = nn.Parameter(torch.empty(n, d_in))
        self.value_param_tokens = nn.Parameter(torch.empty(n, d_out))

    @property
    def n(self):
        return self.key_param_tokens.shape[0]

    def forward(self, x):
        s = x @ self.key_param_tokens.t()
        s = s / torch.linalg.vector_norm(s, ord=2, dim=-1, keepdim=True) * math.sqrt(s.shape[-1])
        return F.gelu(s) @ self.value_param_tokens  # approximate="none": exact erf GELU


def _ln(x, eps):
    return F.layer_norm(x, (x.shape[-1],), None, None, eps)


class Block(nn.Module):
    def __init__(self, cfg, n_qkv, n_proj, n_ffn):
        super().__init__()
        d = cfg["hidden_size"]
        self.h = cfg["num_attention_heads"]
        self.hd = d // self.h
        self.rot = int(self.hd * cfg["rotary_pct"])
        self.eps = cfg["layernorm_epsilon"]
        self.query = Pattention(n_qkv, d, d)
        self.key = Pattention(n_qkv, d, d)
        self.value = Pattention(n_qkv, d, d)
        self.proj = Pattention(n_proj, d, d)
        self.ffn = Pattention(n_ffn, d, d)

    def forward(self, x, cos, sin, cache=None, j=0):
        """cache: a KVCache whose block-j keys/values (positions 0..cache.len-1) precede x's positions."""
        B, T, d = x.shape
        a = _ln(x, self.eps)
        q = self.query(a).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.key(a).view(B, T, self.h, self.hd).transpose(1, 2)
        v = self.value(a).view(B, T, self.h, self.hd).transpose(1, 2)
        r = self.rot
        if r > 0:
            q = torch.cat([_rope(q[..., :r], cos, sin), q[..., r:]], dim=-1)
            k = torch.cat([_rope(k[..., :r], cos, sin), k[..., r:]], dim=-1)
        mask, causal = None, True
        if cache is not None:
            if cache.k[j] is not None:
                k = torch.cat([cache.k[j], k], dim=2)
                v = torch.cat([cache.v[j], v], dim=2)
                # Query i (position past + i) sees keys 0..past + i; one new token sees them all.
                causal = False
                if T > 1:
                    mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - T)
            cache.k[j], cache.v[j] = k, v
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=1.0 / math.sqrt(self.hd))
        o = o.transpose(1, 2).reshape(B, T, d)
        x = x + self.proj(o)
        x = x + self.ffn(_ln(x, self.eps))
        return x


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Keys (after RoPE) and values [B, H, len, hd] of every block for the positions run so far."""

    def __init__(self, num_layers):
        self.k = [None] * num_layers
        self.v = [None] * num_layers
        self.len = 0


class TokenFormer(nn.Module):
    """cfg uses the authors' config keys; vocab_rows = rows of the (tied) embedding."""

    def __init__(self, cfg, vocab_rows):
        super().__init__()
        self.cfg = dict(cfg)
        d = cfg["hidden_size"]
        self.embed = nn.Embedding(vocab_rows, d)
        self.blocks = nn.ModuleList(
            Block(cfg, cfg["qkv_slot_num"], cfg["proj_slot_num"], cfg["ffn_slot_num"]) for _ in range(cfg["num_layers"])
        )
        self.final_norm = nn.LayerNorm(d, eps=cfg["layernorm_epsilon"])
        hd = d // cfg["num_attention_heads"]
        r = int(hd * cfg["rotary_pct"])
        self.rot = r
        inv_freq = cfg.get("rotary_emb_base", 10000) ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rope_tables(self, T, dtype, device, start=0):
        pos = torch.arange(start, start + T, dtype=torch.float64, device=device)
        ang = pos[:, None] * self.inv_freq.to(device)[None, :]
        emb = torch.cat([ang, ang], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, ids, cache=None, last_only=False):
        """Logits [..., T, rows] of ids [..., T] at positions cache.len.. (0.. without a cache), which grows by T;
        with last_only, of the last position only ([..., 1, rows])."""
        x = self.embed(ids)
        start = cache.len if cache is not None else 0
        cos, sin = self.rope_tables(ids.shape[-1], x.dtype, x.device, start)
        for j, b in enumerate(self.blocks):
            x = b(x, cos, sin, cache, j)
        if cache is not None:
            cache.len += ids.shape[-1]
        if last_only:
            x = x[..., -1:, :]
        x = self.final_norm(x)
        return x @ self.embed.weight.t()

    # ---- weights in the two naming schemes -------------------------------------------------------------------
    def project_state(self):
        """{project name: tensor} (embed.weight, blocks.{j}.{proj}.{key,value}_param_tokens, final_norm.*)."""
        out = {"embed.weight": self.embed.weight}
        for j, b in enumerate(self.blocks):
            for p in PROJS:
                m = getattr(b, p)
                out[f"blocks.{j}.{p}.key_param_tokens"] = m.key_param_tokens
                out[f"blocks.{j}.{p}.value_param_tokens"] = m.value_param_tokens
        out["final_norm.weight"] = self.final_norm.weight
        out["final_norm.bias"] = self.final_norm.bias
        return out


def authors_to_project(state, num_layers):
    """Maps the authors' `sequential.N...` names to the project's names."""
    L = num_layers
    m = {"sequential.0.word_embeddings.weight": "embed.weight",
         f"sequential.{L + 3}.norm.weight": "final_norm.weight",
         f"sequential.{L + 3}.norm.bias": "final_norm.bias"}
    for j in range(L):
        for p in PROJS:
            src = f"sequential.{j + 2}." + ("mlp" if p == "ffn" else f"attention.{p}")
            for kv in ("key", "value"):
                m[f"{src}.{kv}_param_tokens"] = f"blocks.{j}.{p}.{kv}_param_tokens"
    missing = set(m) - set(state)
    if missing:
        raise KeyError(f"missing tensors: {sorted(missing)[:5]}")
    return {m[k]: v for k, v in state.items() if k in m}


def config_slots(state, cfg):
    """Fills qkv/proj/ffn slot numbers from tensor shapes when a config lacks them."""
    cfg = dict(cfg)
    cfg.setdefault("qkv_slot_num", state["blocks.0.query.key_param_tokens"].shape[0])
    cfg.setdefault("proj_slot_num", state["blocks.0.proj.key_param_tokens"].shape[0])
    cfg.setdefault("ffn_slot_num", state["blocks.0.ffn.key_param_tokens"].shape[0])
    return cfg


def from_project_state(cfg, state, dtype=torch.float32):
    cfg = config_slots(state, cfg)
    cfg.setdefault("layernorm_epsilon", 1e-5)
    cfg.setdefault("rotary_emb_base", 10000)
    model = TokenFormer(cfg, state["embed.weight"].shape[0]).to(dtype)
    params = model.project_state()
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.as_tensor(state[k]).to(dtype))
    return model
