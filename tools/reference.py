"""TokenFormer float64 numpy reference, written from the authors' computation (docs/numerics.md, "What is computed": the numerical contract).

Everything is computed in float64 from float32 (or bf16-rounded) weights. It is deliberately plain: no KV cache,
generation re-runs the whole context every step. The functions follow the contract's formulas one to one:

    Pattention(X; K, V) = f(X K^T) V                      (no 1/sqrt(d) on the scores)
    block:  a = LN(x); q,k,v = Pq(a),Pk(a),Pv(a); RoPE(q,k); o = causal softmax(q k^T / sqrt(hd)) v
            x = x + Pproj(o); x = x + Pffn(LN(x))
    head:   logits = LN_affine(x) E[:vocab_size]^T        (tied head)

Convention for the degenerate case the released code leaves undefined: when the L2 norm in `l2_norm_gelu` or
`gelu_l2_norm` is exactly zero (e.g. an all-zero score row), that row of Theta is all zeros (the released code would
produce NaN). `softmax` has no degenerate case (a zero row gives Theta = all ones).

Quantized weights (docs/formats.md, "Quantized weights (q8, q4)"; src/quant.rs) are read as the float values their blocks stand for, by the
one dequantization rule: a group of 32 values of a row holds an f16 scale d (and for q4 an f16 minimum m) and a quant q
per value; the value is d*q (q8) or d*q + m (q4), evaluated in float32. The reference then computes in float64 from
those values, like from any other weights.

Usage as a library: `model = load_model(folder)`, `forward(model, ids)`, `generate(model, ids, params)`,
`perplexity(model, ids, window, stride)`, `inspect(model, ids, layer)` (Theta of every Pattention layer of a block and
its attention probabilities, for the inspector); acting on what the inspector shows: `forward(..., interventions=...)`
(Theta columns scaled after the normalisation), `search(model, token)` (every value parameter token's dictionary score
for one token) and `logit_lens(model, ids)` (each block's next-token probabilities). Requires numpy and tokenizers:
pytorch_model.bin and model.safetensors are read by the small readers below.

Usage as a command: `python3 tools/reference.py tests/fixtures/<model>...` recomputes each folder's expected.json
from its weights and prints the largest logit difference and whether every generated id and the eval agree.
"""

import json
import math
import os

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ----------------------------------------------------------------------------------------------- numerics


def gelu(x):
    """Exact GELU: gelu(x) = x/2 * (1 + erf(x / sqrt(2))) (not the tanh approximation)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _safe_row_scale(rows, scale):
    """rows / ||rows||_2 * scale, row-wise; a row whose L2 norm is exactly 0 becomes all zeros."""
    norm = np.sqrt(np.sum(rows * rows, axis=-1, keepdims=True))
    out = np.zeros_like(rows)
    np.divide(rows, norm, out=out, where=norm > 0)
    return out * scale


def normalize_scores(s, kind):
    """Theta = f(S), row-wise over the n parameter tokens (last axis), n = s.shape[-1]:
    l2_norm_gelu: gelu(S / ||S||_2 * sqrt(n));  gelu_l2_norm: gelu(S) / ||gelu(S)||_2 * sqrt(n);
    softmax: n * softmax(S) (max-subtracted). Zero-norm rows give zero Theta rows (see module docstring)."""
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[-1]
    if kind == "l2_norm_gelu":
        return gelu(_safe_row_scale(s, math.sqrt(n)))
    if kind == "gelu_l2_norm":
        return _safe_row_scale(gelu(s), math.sqrt(n))
    if kind == "softmax":
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        return n * e / np.sum(e, axis=-1, keepdims=True)
    raise ValueError(f"unknown norm_activation_type {kind!r}")


def pattention_theta(x, keys, kind):
    """Theta = f(X K^T), the normalised weights Pattention multiplies into the value tokens; [T, n]."""
    return normalize_scores(x @ keys.T, kind)


def pattention(x, keys, values, kind, record=None, scales=()):
    """Pattention: S = X K^T (scale exactly 1), Theta = f(S), out = Theta V.  x [T, d_in], K [n, d_in], V [n, d_out].
    `scales`: (slot, factor) pairs, interventions: Theta's column `slot` is multiplied by `factor` after the
    normalisation, so that slot's value vector enters `factor` times as much. If `record` is a list, Theta (scaled) is
    appended to it (for the inspector fixtures)."""
    theta = pattention_theta(x, keys, kind)
    for slot, factor in scales:
        theta[:, slot] *= factor
    if record is not None:
        record.append(theta)
    return theta @ values


def layer_norm(x, eps, weight=None, bias=None):
    """LN(x) = (x - mean) / sqrt(var + eps) [* weight + bias]; biased variance, over the last axis."""
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight + bias
    return y


def rope(x, r, base):
    """GPT-NeoX rotate-half RoPE on the first r dims of every head; x [T, H, hd], position = row index.
    inv_freq[j] = base^(-2j/r) (j < r/2), angle = pos * inv_freq, emb = concat(angle, angle),
    x_rot = x * cos(emb) + concat(-x[r/2:r], x[:r/2]) * sin(emb); dims r.. pass through unchanged."""
    if r == 0:
        return x
    assert r % 2 == 0, "rotary dims must be even"
    half = r // 2
    inv_freq = base ** (-(2.0 * np.arange(half, dtype=np.float64)) / r)
    angle = np.arange(x.shape[0], dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, r/2]
    emb = np.concatenate([angle, angle], axis=-1)[:, None, :]  # [T, 1, r]
    xr = x[..., :r]
    rotated = np.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    return np.concatenate([xr * np.cos(emb) + rotated * np.sin(emb), x[..., r:]], axis=-1)


def attention_probs(q, k):
    """softmax(q k^T / sqrt(hd) + causal mask) per head, max-subtracted; q, k [T, H, hd] -> [H, T, T]
    (row i: query position i over key positions j; exactly 0 for j > i)."""
    t, h, hd = q.shape
    scores = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(hd)  # [H, T, T]
    scores = np.where(np.tril(np.ones((t, t), dtype=bool))[None], scores, -np.inf)
    p = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
    return p / np.sum(p, axis=-1, keepdims=True)


def causal_attention(q, k, v, record=None):
    """o = softmax(q k^T / sqrt(hd) + causal mask) v per head; q, k, v [T, H, hd] -> [T, H*hd] (heads contiguous).
    If `record` is a list, the probabilities [H, T, T] are appended to it."""
    t, h, hd = q.shape
    p = attention_probs(q, k)
    if record is not None:
        record.append(p)
    return np.einsum("hij,jhd->ihd", p, v).reshape(t, h * hd)


# ----------------------------------------------------------------------------------------------- model

PROJS = ("query", "key", "value", "proj", "ffn")


class Config:
    """The inference-relevant keys of the authors' config.json (other keys are ignored)."""

    def __init__(self, raw):
        assert raw.get("norm", "layernorm_nonparam") == "layernorm_nonparam"
        assert raw.get("final_norm", "layernorm") == "layernorm"
        assert not raw.get("no_weight_tying", False)
        self.num_layers = raw["num_layers"]
        self.d = raw["hidden_size"]
        self.heads = raw["num_attention_heads"]
        self.hd = self.d // self.heads
        self.rotary_dims = int(self.hd * raw.get("rotary_pct", 0.25))
        self.rotary_base = float(raw.get("rotary_emb_base", 10000))
        self.kind = raw.get("norm_activation_type", "l2_norm_gelu")
        self.eps = float(raw.get("layernorm_epsilon", 1e-5))
        self.max_positions = raw["max_position_embeddings"]
        self.slots = {"query": raw["qkv_slot_num"], "key": raw["qkv_slot_num"], "value": raw["qkv_slot_num"],
                      "proj": raw["proj_slot_num"], "ffn": raw["ffn_slot_num"]}


def authors_name(j, proj, kv):
    """Authors' tensor name of block j's Pattention `proj` (query/key/value/proj/ffn), kv in {key, value}."""
    if proj == "ffn":
        return f"sequential.{j + 2}.mlp.{kv}_param_tokens"
    return f"sequential.{j + 2}.attention.{proj}.{kv}_param_tokens"


def project_name(j, proj, kv):
    """The project's readable tensor name (model.safetensors) for the same tensor."""
    return f"blocks.{j}.{proj}.{kv}_param_tokens"


class Model:
    """Weights as float64 arrays plus config and vocab_size (the tokenizer's size including added tokens)."""

    def __init__(self, cfg, tensors, vocab_size, authors_names=True):
        self.cfg = cfg
        self.vocab_size = vocab_size
        name = authors_name if authors_names else project_name
        w = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
        L = cfg.num_layers
        self.embed = w["sequential.0.word_embeddings.weight" if authors_names else "embed.weight"]
        assert self.embed.shape[0] >= vocab_size
        self.blocks = [{p: (w[name(j, p, "key")], w[name(j, p, "value")]) for p in PROJS} for j in range(L)]
        fw = f"sequential.{L + 3}.norm.weight" if authors_names else "final_norm.weight"
        fb = f"sequential.{L + 3}.norm.bias" if authors_names else "final_norm.bias"
        self.final_w, self.final_b = w[fw], w[fb]
        assert len(w) == 1 + 10 * L + 2, "unexpected extra tensors"


def load_model(folder):
    """Loads config.json, tokenizer.json (for vocab_size) and pytorch_model.bin or model.safetensors."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = Config(json.load(f))
    from tokenizers import Tokenizer

    vocab_size = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    bin_path = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(bin_path):
        return Model(cfg, read_pytorch_bin(bin_path), vocab_size, authors_names=True)
    tensors = read_safetensors(os.path.join(folder, "model.safetensors"))
    for name, t in tensors.items():
        if isinstance(t, tuple):
            # Blocks hold whole groups: cut rows to the config's width; values come back from Vᵀ to V.
            proj = name.split(".")[-2] if name.startswith("blocks.") else None
            values = name.endswith("value_param_tokens")
            tensors[name] = t[1][:, : cfg.slots[proj]].T if values else t[1][:, : cfg.d]
    return Model(cfg, tensors, vocab_size, authors_names=False)


# ----------------------------------------------------------------------------------------------- weight files

GROUP = 32  # values per quantization group


def dequantize(fmt, blocks, cols):
    """The values of rows of blocks (uint8 [rows, bytes per row]) as float32 [rows, cols], by the one rule:
    q8 block (34 bytes): f16 d, 32 int8 q; value d*q. q4 block (20 bytes): f16 d, f16 m, 16 bytes whose byte j holds
    q[2j] in its low nibble and q[2j+1] in its high; value d*q + m. Both in float32 (d*q is exact; q4 rounds the sum
    once). Values past `cols` in a row's last block are padding."""
    size = {"q8": 2 + GROUP, "q4": 4 + GROUP // 2}[fmt]
    rows = blocks.shape[0]
    b = blocks.reshape(rows, -1, size)
    d = b[:, :, 0:2].copy().view(np.float16).astype(np.float32)  # [rows, groups, 1]
    if fmt == "q8":
        q = b[:, :, 2:].view(np.int8).astype(np.float32)
        values = d * q
    else:
        m = b[:, :, 2:4].copy().view(np.float16).astype(np.float32)
        packed = b[:, :, 4:]
        q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(rows, -1, GROUP).astype(np.float32)
        values = d * q + m
    return values.reshape(rows, -1)[:, :cols]


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8}


def read_safetensors(path):
    """Every tensor of a safetensors file as float64, by name. Quantized matrices (U8 tensors named NAME.q8 or
    NAME.q4, rows of blocks) come back as ("blocks", float32 values [rows, whole groups]) under NAME, for the
    caller to cut to the config's sizes (a quantized value tensor is stored transposed: Vᵀ, [d_out, n], grouped
    along the slots). BF16 is widened by its bits."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        start, end = (8 + n + o for o in t["data_offsets"])
        raw = data[start:end]
        if t["dtype"] == "BF16":
            bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32).reshape(t["shape"])
        else:
            arr = np.frombuffer(raw, _SAFETENSORS_DTYPES[t["dtype"]]).reshape(t["shape"])
        base, _, fmt = name.rpartition(".")
        if fmt in ("q8", "q4"):
            assert t["dtype"] == "U8", f"{name}: quantized blocks are U8"
            groups = arr.shape[1] // (2 + GROUP if fmt == "q8" else 4 + GROUP // 2)
            out[base] = ("blocks", dequantize(fmt, arr, groups * GROUP))
        else:
            out[name] = arr.astype(np.float64)
    return out


def read_pytorch_bin(path):
    """The float tensors of a torch.save zip archive (pytorch_model.bin) as float64 arrays, by name, read with
    pickle and numpy alone: the storages are the archive's data/N entries, the tensors contiguous views of them."""
    import pickle
    import zipfile

    storages = {"FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bf16"}
    with zipfile.ZipFile(path) as z:
        prefix = next(n for n in z.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]

        def storage(pid):
            _, kind, key, _, _ = pid
            raw = z.read(f"{prefix}data/{key}")
            if kind == "bf16":
                return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            return np.frombuffer(raw, kind)

        def rebuild(storage, offset, size, stride, *_):
            count = int(np.prod(size))
            expect = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
            assert count == 0 or tuple(stride) == expect, "non-contiguous tensor"
            return storage[offset : offset + count].reshape(size)

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if module == "torch" and name in storages:
                    return storages[name]
                if (module, name) == ("collections", "OrderedDict"):
                    import collections

                    return collections.OrderedDict
                raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

            def persistent_load(self, pid):
                return storage(pid)

        state = Unpickler(z.open(f"{prefix}data.pkl")).load()
    return {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}


def head(model, x):
    """The tied head on residual rows x [T, d]: LN_affine(x) E[:vocab_size]^T."""
    return layer_norm(x, model.cfg.eps, model.final_w, model.final_b) @ model.embed[: model.vocab_size].T


def forward(model, ids, return_hidden=False, record=None, interventions=None, lens=None):
    """Logits [T, vocab_size] for every position of `ids` (positions 0..T-1); with return_hidden, the final
    normalised hidden states [T, d] instead.
    If `record` is a dict, it receives for every block j: record[(j, proj)] = Theta [T, n] of each Pattention layer
    (proj in PROJS) and record[(j, "attention")] = the causal attention probabilities [H, T, T].
    `interventions`: {(j, proj): [(slot, factor), ...]}, Theta columns scaled in every pass (see `pattention`).
    If `lens` is a list, it receives for every block the logit lens: softmax(head(residual after the block)) [T, V]."""
    cfg = model.cfg
    assert 1 <= len(ids) <= cfg.max_positions
    x = model.embed[np.asarray(ids)]
    t = len(ids)
    scales = lambda j, p: (interventions or {}).get((j, p), ())  # noqa: E731
    for j, blk in enumerate(model.blocks):
        rec = {name: ([] if record is not None else None) for name in PROJS + ("attention",)}
        a = layer_norm(x, cfg.eps)
        q, k, v = (pattention(a, *blk[p], cfg.kind, rec[p], scales(j, p)).reshape(t, cfg.heads, cfg.hd)
                   for p in ("query", "key", "value"))
        q, k = rope(q, cfg.rotary_dims, cfg.rotary_base), rope(k, cfg.rotary_dims, cfg.rotary_base)
        o = causal_attention(q, k, v, rec["attention"])
        x = x + pattention(o, *blk["proj"], cfg.kind, rec["proj"], scales(j, "proj"))
        x = x + pattention(layer_norm(x, cfg.eps), *blk["ffn"], cfg.kind, rec["ffn"], scales(j, "ffn"))
        if record is not None:
            record.update({(j, name): got[0] for name, got in rec.items()})
        if lens is not None:
            lens.append(np.exp(log_softmax(head(model, x))))
    if return_hidden:
        return layer_norm(x, cfg.eps, model.final_w, model.final_b)
    return head(model, x)


def logit_lens(model, ids, interventions=None):
    """The logit lens: for every block, the next-token probabilities read from the residual stream after it through
    the final norm and the tied head, [layers, T, vocab_size]. The last block's rows are the model's prediction."""
    lens = []
    forward(model, ids, interventions=interventions, lens=lens)
    return np.stack(lens)


def search(model, token):
    """Every value parameter token's dictionary score for one vocabulary token, E[token] . v (no final norm), in the
    order block by block, within a block query, key, value, proj, ffn, each projection's slots in order."""
    e = model.embed[token]
    return np.concatenate([blk[p][1] @ e for blk in model.blocks for p in PROJS])


def inspect(model, ids, layer):
    """What the Pattention inspector shows for block `layer` (0-based) after running `ids` from position 0:
    {"theta": {proj: Theta [T, n] for proj in PROJS}, "attention": probabilities [H, T, T]}."""
    assert 0 <= layer < model.cfg.num_layers
    record = {}
    forward(model, ids, record=record)
    return {"theta": {p: record[(layer, p)] for p in PROJS}, "attention": record[(layer, "attention")]}


# ----------------------------------------------------------------------------------------------- sampling

MASK32 = 0xFFFFFFFF


def pcg_hash(x):
    """PCG-RXS-M-XS hash of a u32: state = x*747796405 + 2891336453; word = ((state >> ((state >> 28) + 4)) ^ state)
    * 277803737; return (word >> 22) ^ word (all mod 2^32)."""
    state = (x * 747796405 + 2891336453) & MASK32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & MASK32
    return (word >> 22) ^ word


def uniform(seed, step):
    """u in [0, 1): (pcg_hash(pcg_hash(seed) ^ step) >> 8) / 2^24, seed and step as u32."""
    return (pcg_hash(pcg_hash(seed & MASK32) ^ (step & MASK32)) >> 8) / float(1 << 24)


def sample(logits, context, p, step, diag=None):
    """One token from `logits` (vocab_size entries) per the shared sampler spec:
    1. repetition penalty on every distinct id in context (l/r if l > 0 else l*r), when r != 1;
    2. temperature <= 0, or a largest logit that is not finite: argmax (lowest id on exact ties; NaN logits
       are outside what this reference covers);
    3. candidates sorted by (logit desc, id asc), first top_k if top_k > 0;
    4. probs = softmax((l - l_max) / temperature) over candidates;
    5. top_p < 1: shortest prefix with cumulative prob >= top_p (at least one);
    6. target = uniform(seed, step) * sum(kept probs); first kept id whose running sum exceeds target (else last).
    If `diag` is a dict, the margins that decide the outcome are stored in it (for fixture robustness checks)."""
    l = np.array(logits, dtype=np.float64)
    r = p["repetition_penalty"]
    if r != 1:
        for i in sorted(set(context)):
            l[i] = l[i] / r if l[i] > 0 else l[i] * r
    order = sorted(range(len(l)), key=lambda i: (-l[i], i))
    if p["temperature"] <= 0 or not np.isfinite(l[order[0]]):
        if diag is not None:
            diag["greedy_margin"] = l[order[0]] - l[order[1]]
        return order[0]
    if p["top_k"] > 0:
        if diag is not None and p["top_k"] < len(order):
            diag["top_k_margin"] = l[order[p["top_k"] - 1]] - l[order[p["top_k"]]]
        order = order[: p["top_k"]]
    w = np.exp((l[order] - l[order[0]]) / p["temperature"])
    probs = w / np.sum(w)
    if p["top_p"] < 1:
        cum = np.cumsum(probs)
        keep = next((i + 1 for i, c in enumerate(cum) if c >= p["top_p"]), len(order))
        if diag is not None:
            near = [cum[keep - 1]] + ([cum[keep - 2]] if keep >= 2 else [])
            diag["top_p_margin"] = min(abs(c - p["top_p"]) for c in near)
        order, probs = order[:keep], probs[:keep]
    total = float(np.sum(probs))
    target = uniform(p["seed"], step) * total
    acc, chosen = 0.0, None
    bounds = []
    for i, pr in zip(order, probs):
        acc += pr
        bounds.append(acc)
        if chosen is None and acc > target:
            chosen = i
    if chosen is None:
        chosen = order[-1]
    if diag is not None:
        # distance (relative to total) from the draw to the nearest cumulative boundary (0 and total excluded)
        inner = bounds[:-1]
        diag["draw_margin"] = min((abs(b - target) / total for b in inner), default=1.0)
    return chosen


def generate(model, prompt_ids, params, diags=None, next_logits=None):
    """Generation loop of the shared spec: up to max_tokens steps; each step samples from forward(context)[-1];
    id 0 (<|endoftext|>) stops generation and is not returned. Greedy = temperature 0.
    `diags`, if a list, receives one diag dict per step (see `sample`); `next_logits(context)`, if given, replaces
    forward(model, context)[-1] (e.g. a memoised version)."""
    next_logits = next_logits or (lambda ctx: forward(model, ctx)[-1])
    context, out = list(prompt_ids), []
    for step in range(params["max_tokens"]):
        diag = {}
        tok = sample(next_logits(context), context, params, step, diag)
        if diags is not None:
            diags.append(diag)
        if tok == 0:
            break
        out.append(tok)
        context.append(tok)
    return out


GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "seed": 0}


# ----------------------------------------------------------------------------------------------- perplexity


def log_softmax(x):
    """log softmax over the last axis, max-subtracted."""
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def perplexity(model, ids, window, stride, interventions=None):
    """Sliding-window perplexity: windows start at b = 0, S, 2S, ...; each runs ids[b : min(b+W, N)] from position 0
    and scores targets t in [max(b+1, next_unscored), min(b+W, N)) with logits at t-1; next_unscored starts at 1 and
    becomes the window end; stop after the window that reaches N.
    Returns (tokens_scored, nll_mean, exp(nll_mean))."""
    n = len(ids)
    nlls, next_unscored, b = [], 1, 0
    while True:
        end = min(b + window, n)
        lp = log_softmax(forward(model, ids[b:end], interventions=interventions))
        for t in range(max(b + 1, next_unscored), end):
            nlls.append(-lp[t - 1 - b, ids[t]])
        next_unscored = end
        if end >= n:
            break
        b += stride
    nll = float(np.mean(nlls))
    return len(nlls), nll, math.exp(nll)


# ----------------------------------------------------------------------------------------------- command line


def verify(folder):
    """Recomputes folder/expected.json from the folder's weights; returns True when everything agrees."""
    with open(os.path.join(folder, "expected.json")) as f:
        exp = json.load(f)
    model = load_model(folder)
    ok, worst = model.vocab_size == exp["vocab_size"], 0.0
    for case in exp["cases"]:
        worst = max(worst, float(np.max(np.abs(forward(model, case["ids"]) - np.array(case["logits"])))))
        ok &= generate(model, case["ids"], dict(GREEDY, max_tokens=32)) == case["greedy"]
        for run in case["sampled"]:
            ok &= generate(model, case["ids"], run) == run["ids"]
    if "eval" in exp:
        e = exp["eval"]
        n, nll, _ = perplexity(model, e["ids"], e["window"], e["stride"])
        ok &= n == e["tokens_scored"] and abs(nll - e["nll_mean"]) < 1e-9
    ok &= worst < 1e-9
    print(f"{folder}: max |logit difference| = {worst:.2e}, {'all agree' if ok else 'MISMATCH'}")
    return ok


if __name__ == "__main__":
    import sys

    sys.exit(0 if all([verify(folder) for folder in sys.argv[1:]]) else 1)
