"""Writes every file under tests/fixtures/ (deterministic: fixed seeds, no timestamps; see tests/fixtures/README.md).

    pip install -r tools/requirements.txt
    python3 tools/make_fixtures.py            # from the repository root; about a minute on 2 cores

Tiny random TokenFormer models in the authors' hub layout (config.json, pytorch_model.bin, tokenizer.json) plus
expected.json computed by tools/reference.py (float64 numpy). Before writing, every model's logits are cross-checked
against an independent float64 PyTorch implementation (complex-number RoPE, torch's GELU/LayerNorm/SDPA) to 1e-10.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # single-threaded BLAS: reproducible sums
    os.environ.setdefault(_v, "1")

import collections
import hashlib
import json
import math
import pickletools
import shutil
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures")
NEOX_TOKENIZER = os.path.join(REPO, "models", "gpt-neox-20b", "tokenizer.json")

GREEDY_MIN_MARGIN = 2e-3  # top-1 minus top-2 logit (after repetition penalty) at every greedy step
TOPK_MIN_MARGIN = 2e-3  # logit gap across the top_k cut
DRAW_MIN_MARGIN = 1e-4  # |target - cumulative boundary| / total at every sampled step
TOPP_MIN_MARGIN = 1e-4  # |cumulative prob - top_p| at the top_p cut

# ----------------------------------------------------------------------------------------------- text

CORPUS = """\
The river begins as a thin line of water in the high meadows, where snow lies late into the spring. Nobody \
lives up there. In the summer the shepherds bring their flocks to the grass, and in the autumn they take them \
down again, and the water goes on running whether anyone is watching it or not.

Lower down, the river finds other streams and grows wide and slow. Towns were built wherever it could be crossed. \
Each town has a bridge, a market, a church with a square tower, and a story about a flood that came in some year \
that the old people still remember. The stories are never quite the same, but they always end with the water \
going back to where it belongs.

The lighthouse keeper wrote in his book every evening. He wrote down the wind, the height of the sea, the ships \
that passed, and the time the lamp was lit. Some nights there was nothing else to say. On other nights he wrote \
a page about the birds that struck the glass, or the fog that rolled in so thick that the light seemed to stop \
a few feet from the window.

A good map is a kind of promise. It says that the road will turn here, that the hill will rise there, and that \
the village will be waiting on the far side of the wood. Travellers learn which maps keep their promises. They \
fold the good ones carefully and keep them dry, and they give the bad ones to children, who draw dragons on them.

In the kitchen the bread was rising under a cloth. The oven was warm, the kettle was singing, and the cat had \
found the one square of sunlight on the floor. Outside it was raining, softly and steadily, the kind of rain \
that makes the garden smell green and keeps everyone at home for the whole afternoon.
"""

PROMPT_TEXT = "The keeper wrote down the wind."  # ~20 tokens with this tiny vocabulary
PROMPT_TEXT_ALT = ["The bread was rising in the oven.", "A good map is a kind of promise."]  # if the first is fragile
INSPECT_TEXT = "The lamp was lit."  # 11 tokens: inspect.json's prompt (kept short, the file holds every Theta row)
LONG_TEXT = "The river  ran on, and nobody was watching it."  # <= 32 tokens, has a double space (added token 299)
EVAL_TEXT = (
    "The keeper climbed the stairs at dusk and lit the lamp. Far out, a ship was turning toward the harbour, "
    "its lights low on the water. He wrote the time in his book, and the wind,  and the height of the sea. "
    "Then he made tea."
)

NEOX_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "   leading spaces and trailing spaces   ",
    "line one\nline two\n\n\tindented with a tab\r\nwindows line",
    "Café naïve résumé — an em dash, “curly quotes” and ½ fraction",
    "日本語のテキストと中文字符",
    "emoji: 🦀🚀 and a family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "Hello<|endoftext|>World <|endoftext|> and <|padding|>",
    "Numbers 1234567890 and 3.14159, URLs https://example.com/a?b=c#d",
]

# ----------------------------------------------------------------------------------------------- models

BASE_CONFIG = {
    "max_position_embeddings": 64,
    "rotary_emb_base": 10000,
    "norm": "layernorm_nonparam",
    "final_norm": "layernorm",
    "no_weight_tying": False,
    "torch_dtype": "float16",  # wrong on purpose, like the released configs: the weights are float32
    "layernorm_epsilon": 1e-05,
    "init_method": "small_init",
    "use_bias_in_attn_linear": False,
}

# eos_scale: l2_norm_gelu's embedding row 0 is multiplied by it. With purely random rows id 0 ranks far down and no
# run would ever stop on <|endoftext|>; scaled, several sampled runs stop early and exercise the stop rule.
VARIANTS = {
    "l2_norm_gelu": dict(num_layers=3, hidden_size=72, num_attention_heads=3, qkv_slot_num=37, proj_slot_num=29,
                         ffn_slot_num=83, rotary_pct=0.25, seed=101, eos_scale=2.0),
    "gelu_l2_norm": dict(num_layers=2, hidden_size=40, num_attention_heads=2, qkv_slot_num=19, proj_slot_num=23,
                         ffn_slot_num=61, rotary_pct=0.4, seed=202),
    "softmax": dict(num_layers=2, hidden_size=48, num_attention_heads=4, qkv_slot_num=31, proj_slot_num=17,
                    ffn_slot_num=47, rotary_pct=0.5, seed=303),
}
EMBED_STD = 0.4  # input embedding / tied head; logits then spread by a few units (see README)
VALUE_GAIN = {"proj": 4.0, "ffn": 4.0}  # value tokens: gain / sqrt(n), centred (see init_weights); q/k/v gain 1

SAMPLED = [
    dict(temperature=0.8, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=7),
    dict(temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=1000),
    dict(temperature=0.7, top_k=5, top_p=0.5, repetition_penalty=1.1, seed=4242),
    dict(temperature=1.2, top_k=0, top_p=0.9, repetition_penalty=1.0, seed=31337),
    dict(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.2, seed=0),  # greedy with a penalty
]
MAX_TOKENS = 24
GREEDY_TOKENS = 32


def train_tokenizer():
    """Byte-level BPE like GPT-NeoX: NFC, ByteLevel(add_prefix_space=False), specials 0/1, 297 model ids plus three
    non-special added whitespace tokens (ids 297..299), so vocab_size with added tokens (300) > model vocab (297)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=297, special_tokens=["<|endoftext|>", "<|padding|>"], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer=trainer)
    tok.add_tokens([AddedToken(s, normalized=True) for s in ("    ", "   ", "  ")])
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    assert tok.get_vocab_size(with_added_tokens=False) == 297 and tok.get_vocab_size(with_added_tokens=True) == 300
    return Tokenizer.from_str(tok.to_str(pretty=True))


def init_weights(spec, rows):
    """float32 tensors, authors' names, in file order. Embedding EMBED_STD * N(0,1); keys N(0,1)/sqrt(d); values
    VALUE_GAIN * N(0,1)/sqrt(n) minus their mean over the n tokens (so Theta's positive mean adds no constant vector);
    final norm weight 1 + 0.1 N(0,1), bias 0.1 N(0,1). With plain 1/sqrt(n) values the tied embedding dominates the
    residual and every continuation just repeats one token."""
    rng = np.random.default_rng(spec["seed"])
    d, L = spec["hidden_size"], spec["num_layers"]
    slots = {"query": spec["qkv_slot_num"], "key": spec["qkv_slot_num"], "value": spec["qkv_slot_num"],
             "proj": spec["proj_slot_num"], "ffn": spec["ffn_slot_num"]}
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    w = collections.OrderedDict()
    emb = rng.standard_normal((rows, d)) * EMBED_STD
    emb[0] *= spec.get("eos_scale", 1.0)
    w["sequential.0.word_embeddings.weight"] = f32(emb)
    for j in range(L):
        for p in ref.PROJS:
            n = slots[p]
            w[ref.authors_name(j, p, "key")] = f32(rng.standard_normal((n, d)) / math.sqrt(d))
            v = rng.standard_normal((n, d)) * VALUE_GAIN.get(p, 1.0) / math.sqrt(n)
            w[ref.authors_name(j, p, "value")] = f32(v - v.mean(axis=0, keepdims=True))
    w[f"sequential.{L + 3}.norm.weight"] = f32(1 + 0.1 * rng.standard_normal(d))
    w[f"sequential.{L + 3}.norm.bias"] = f32(0.1 * rng.standard_normal(d))
    return w


def to_bf16(a):
    """float32 -> bf16 (round to nearest even, as torch does) -> float32 again, plus the torch bf16 tensor."""
    t = torch.from_numpy(a).to(torch.bfloat16)
    return t.float().numpy(), t


def round_half_away(x):
    """float32 values rounded to integers, halves away from zero (Rust's f32::round), exactly."""
    x = x.astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(fmt, w):
    """Rows of float32 values [rows, cols] as rows of blocks (uint8), written here from src/quant.rs's rule and
    not from its code, so the fixtures check Rust's quantizer byte for byte: each group of 32 values (the last one
    of a row may be short: values past the row are not part of its range and get q = 0), in float32,
    q8: d = f16(max |w| / 127), q = clamp(round(w / d), -127, 127);
    q4: m = f16(min w), d = f16((max w - min w) / 15), q = clamp(round((w - m) / d), 0, 15);
    halves rounded away from zero, q = 0 where d = 0. Blocks: f16 d, (q4: f16 m,) then the quants (q4: byte j holds
    q[2j] in its low nibble, q[2j+1] in its high)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    groups = -(-cols // ref.GROUP)
    g = np.zeros((rows, groups * ref.GROUP), np.float32)
    g[:, :cols] = w
    g = g.reshape(rows, groups, ref.GROUP)
    valid = (np.arange(groups * ref.GROUP) < cols).reshape(groups, ref.GROUP)[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if fmt == "q8":
            d = (np.where(valid, np.abs(g), 0).max(-1) / np.float32(127)).astype(np.float16)
            d32 = d.astype(np.float32)[..., None]
            q = np.clip(round_half_away(g / d32), -127, 127)
            q = np.where(valid & (d32 > 0), q, 0).astype(np.int8).view(np.uint8)
            parts = [d[..., None].view(np.uint8), q]
        else:
            lo = np.where(valid, g, np.inf).min(-1)
            hi = np.where(valid, g, -np.inf).max(-1)
            m, d = lo.astype(np.float16), ((hi - lo) / np.float32(15)).astype(np.float16)
            d32, m32 = d.astype(np.float32)[..., None], m.astype(np.float32)[..., None]
            q = np.clip(round_half_away((g - m32) / d32), 0, 15)
            q = np.where(valid & (d32 > 0), q, 0).astype(np.uint8)
            parts = [d[..., None].view(np.uint8), m[..., None].view(np.uint8), q[..., 0::2] | (q[..., 1::2] << 4)]
    assert np.isfinite(d.astype(np.float32)).all(), "a scale beyond f16's range"
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def write_quantized(folder, fmt, w, names, config, tokenizer_json):
    """A project-layout folder whose parameter tokens are quantized to `fmt` (values as Vᵀ, grouped along the
    slots), the embedding f16 (the runtime's default with q8 and q4), the final norm f32."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    write_json(os.path.join(folder, "config.json"), config)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(tokenizer_json)
    tensors = {}
    for k, v in w.items():
        name = names[k]
        if name.endswith("_param_tokens"):
            rows = v.T if name.endswith("value_param_tokens") else v
            tensors[f"{name}.{fmt}"] = quantize(fmt, rows)
        elif name == "embed.weight":
            tensors[name] = v.astype(np.float16)
        else:
            tensors[name] = v.astype(np.float32)
    save_numpy(tensors, os.path.join(folder, "model.safetensors"))


# ----------------------------------------------------------------------------------------------- independent check


def torch_logits(cfg, w, vocab_size, ids, authors=True, dtype=torch.float64, record=None):
    """A second implementation (torch): RoPE via complex multiplication on (x_i, x_{i+r/2}) pairs, F.gelu,
    F.layer_norm and F.scaled_dot_product_attention. In float64 it cross-checks reference.forward; in float32 it
    stands in for the Rust runtime's precision (see f32_agreement). If `record` is a dict it receives, like
    reference.forward's, record[(j, proj)] = Theta and record[(j, "attention")] = probabilities [H, T, T] (these
    computed explicitly with a causal mask, since SDPA does not return them)."""
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)).to(dtype) for k, v in w.items()}
    name = ref.authors_name if authors else ref.project_name
    L, d, H = cfg.num_layers, cfg.d, cfg.heads
    hd, r = d // H, cfg.rotary_dims

    def patt(x, j, p):
        s = x @ t[name(j, p, "key")].T
        n = s.shape[-1]
        if cfg.kind == "l2_norm_gelu":
            th = F.gelu(s / torch.linalg.vector_norm(s, dim=-1, keepdim=True) * math.sqrt(n))
        elif cfg.kind == "gelu_l2_norm":
            g = F.gelu(s)
            th = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True) * math.sqrt(n)
        else:
            th = torch.softmax(s, dim=-1) * n
        if record is not None:
            record[(j, p)] = th.double().numpy()
        return th @ t[name(j, p, "value")]

    def rot(x):  # x [H, T, hd]
        pos = torch.arange(x.shape[1], dtype=dtype)
        freqs = torch.tensor([cfg.rotary_base ** (-2 * i / r) for i in range(r // 2)], dtype=dtype)
        z = torch.polar(torch.ones(len(pos), r // 2, dtype=dtype), pos[:, None] * freqs[None])
        c = torch.complex(x[..., : r // 2], x[..., r // 2: r]) * z
        return torch.cat([c.real, c.imag, x[..., r:]], dim=-1)

    emb = t["sequential.0.word_embeddings.weight" if authors else "embed.weight"]
    x = emb[torch.tensor(ids)]
    T = len(ids)
    for j in range(L):
        a = F.layer_norm(x, (d,), eps=cfg.eps)
        q, k, v = (patt(a, j, p).view(T, H, hd).transpose(0, 1) for p in ("query", "key", "value"))
        o = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True)
        if record is not None:
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            scores = (rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(hd)).masked_fill(~mask, -math.inf)
            record[(j, "attention")] = torch.softmax(scores, dim=-1).double().numpy()
        x = x + patt(o.transpose(0, 1).reshape(T, d), j, "proj")
        x = x + patt(F.layer_norm(x, (d,), eps=cfg.eps), j, "ffn")
    fw = t[f"sequential.{L + 3}.norm.weight" if authors else "final_norm.weight"]
    fb = t[f"sequential.{L + 3}.norm.bias" if authors else "final_norm.bias"]
    return (F.layer_norm(x, (d,), fw, fb, cfg.eps) @ emb[:vocab_size].T).double().numpy()


# ----------------------------------------------------------------------------------------------- writers


def _dumps(obj, level):
    """JSON with one item per line, except that a list of scalars (ids, a logit row) stays on one line."""
    if isinstance(obj, dict) and obj:
        pad = " " * (level + 1)
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        pad = " " * (level + 1)
        return "[\n" + ",\n".join(pad + _dumps(v, level + 1) for v in obj) + "\n" + " " * level + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(_dumps(obj, 0) + "\n")


def check_pickle_globals(path):
    """The state-dict pickle may reference only these three globals (like the released checkpoints)."""
    with zipfile.ZipFile(path) as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        data = z.read(pkl)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(" ".join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    allowed = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch FloatStorage"}
    assert found == allowed, found
    return sorted(found)


def margins_ok(diags):
    for dg in diags:
        if dg.get("greedy_margin", 1) <= GREEDY_MIN_MARGIN or dg.get("top_k_margin", 1) <= TOPK_MIN_MARGIN:
            return False
        if dg.get("draw_margin", 1) <= DRAW_MIN_MARGIN or dg.get("top_p_margin", 1) <= TOPP_MIN_MARGIN:
            return False
    return True


STATS = {}  # margin name -> (smallest value seen in the written fixtures, where)
SEED_TRIES = collections.Counter()


def record(diags, where):
    for dg in diags:
        for k, v in dg.items():
            if v < STATS.get(k, (math.inf,))[0]:
                STATS[k] = (v, where)


def variation(params, attempt):
    """The attempt-th candidate parameter set: seed + attempt; every 25 attempts top_k + 1 (if > 0) and
    top_p - 0.01 (if < 1), since a fragile top-k/top-p cut does not depend on the seed; for temperature 0 (no seed
    effect) the repetition penalty (if != 1) grows by 0.05 per attempt."""
    p = dict(params, max_tokens=params.get("max_tokens", MAX_TOKENS), seed=params["seed"] + attempt)
    shift = attempt // 25
    if p["top_k"] > 0:
        p["top_k"] += shift
    if p["top_p"] < 1:
        p["top_p"] = round(p["top_p"] - 0.01 * shift, 2)
    if p["temperature"] <= 0 and p["repetition_penalty"] != 1:
        p["repetition_penalty"] = round(p["repetition_penalty"] + 0.05 * attempt, 2)
    return p


def memo_next_logits(model):
    """forward(model, context)[-1], memoised on the context (retries share prefixes)."""
    cache = {}

    def next_logits(context):
        key = tuple(context)
        if key not in cache:
            cache[key] = ref.forward(model, context)[-1]
        return cache[key]

    return next_logits


def robust_generate(model, prompt, params, where, next_logits):
    """Runs generate() with variation(params, 0), (.., 1), ... until no step is too close to a decision boundary
    (and, for temperature > 0, the run did not stop on <|endoftext|> within its first 4 steps, so that a short run
    does not pass the margin test merely by having few steps); returns (params actually used, ids), or None when a
    plain greedy run (no seed, no penalty) is fragile."""
    for attempt in range(300):
        p = variation(params, attempt)
        diags = []
        ids = ref.generate(model, prompt, p, diags, next_logits)
        if p["temperature"] > 0 and len(ids) < min(4, p["max_tokens"]):
            continue
        if margins_ok(diags):
            record(diags, where)
            SEED_TRIES[where] = attempt
            return p, ids
        if p["temperature"] <= 0 and p["repetition_penalty"] == 1:
            return None
    raise RuntimeError(f"no robust parameters for {where}")


def build_cases(model, tok, variant, rng, long_case):
    """1-token prompt [0]; 8 random ids (one added-token id); ~20-token text; if long_case, a 30-token text
    (prompt + 32 greedy tokens = 62 of the 64 positions)."""
    prompts = [(None, [0])]
    prompts.append((None, [int(i) for i in rng.choice(np.arange(2, 297), size=7, replace=False)] + [299]))
    prompts.append(([PROMPT_TEXT] + PROMPT_TEXT_ALT, None))
    if long_case:
        prompts.append(([LONG_TEXT], None))
    next_logits = memo_next_logits(model)
    cases = []
    for ci, (texts, ids) in enumerate(prompts):
        options = [(None, ids)] if texts is None else [(s, tok.encode(s, add_special_tokens=False).ids) for s in texts]
        if ci == 1:  # alternative id prompts, if the first is fragile
            options += [(None, ids[1:] + ids[:1]), (None, ids[::-1])]
        for text, pids in options:
            got = robust_generate(model, pids, dict(ref.GREEDY, max_tokens=GREEDY_TOKENS), f"{variant}/case{ci}/greedy",
                                  next_logits)
            if got is not None:
                break
        else:
            raise RuntimeError(f"{variant} case {ci}: every prompt has a fragile greedy step")
        assert len(pids) + GREEDY_TOKENS <= model.cfg.max_positions
        case = {} if text is None else {"text": text}
        case["ids"] = pids
        case["logits"] = ref.forward(model, pids).tolist()
        case["greedy"] = got[1]
        case["sampled"] = []
        for si, params in enumerate(SAMPLED):
            p, out = robust_generate(model, pids, params, f"{variant}/case{ci}/sampled{si}", next_logits)
            case["sampled"].append({k: p[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty", "seed",
                                                      "max_tokens")} | {"ids": out})
        cases.append(case)
    return cases


def expected_for(model, tok, variant, case_seed, long_case):
    cases = build_cases(model, tok, variant, np.random.default_rng(case_seed), long_case)
    exp = {"vocab_size": model.vocab_size, "cases": cases}
    ids = tok.encode(EVAL_TEXT, add_special_tokens=False).ids
    n, nll, ppl = ref.perplexity(model, ids, 64, 32)
    exp["eval"] = {"text": EVAL_TEXT, "ids": ids, "window": 64, "stride": 32, "tokens_scored": n,
                   "nll_mean": nll, "perplexity": ppl}
    return exp


def cross_check(model, cfg, w, exp, authors):
    worst = 0.0
    for case in exp["cases"]:
        for s in [case["ids"], case["ids"] + case["greedy"]]:
            a = ref.forward(model, s)
            b = torch_logits(cfg, w, model.vocab_size, s, authors)
            worst = max(worst, float(np.max(np.abs(a - b))))
    assert worst < 1e-10, worst
    return worst


def f32_agreement(model, cfg, w, exp, authors):
    """Re-runs every case with float32 torch logits (sampler unchanged): all generated ids must match the float64
    fixtures. Returns the largest |float32 - float64| logit difference over the prompts."""
    cache = {}

    def next_logits(context):
        key = tuple(context)
        if key not in cache:
            cache[key] = torch_logits(cfg, w, model.vocab_size, list(context), authors, torch.float32)[-1]
        return cache[key]

    worst = 0.0
    for case in exp["cases"]:
        lg = torch_logits(cfg, w, model.vocab_size, case["ids"], authors, torch.float32)
        worst = max(worst, float(np.max(np.abs(lg - np.array(case["logits"])))))
        runs = [(dict(ref.GREEDY, max_tokens=GREEDY_TOKENS), case["greedy"])] + [(s, s["ids"]) for s in case["sampled"]]
        for params, ids in runs:
            assert ref.generate(model, case["ids"], params, None, next_logits) == ids, (params, ids)
    return worst


def inspect_fixture(models):
    """tests/fixtures/inspect.json: for each (variant, model, config, weights), Theta of every Pattention layer in the
    first and last block and the attention probabilities of the first block, for INSPECT_TEXT. Cross-checked against
    the torch implementation's record. Returns the largest |reference - torch f64| difference."""
    out, worst = {"text": INSPECT_TEXT, "models": []}, 0.0
    for variant, model, cfg, w, tok in models:
        ids = tok.encode(INSPECT_TEXT, add_special_tokens=False).ids
        layers = sorted({0, cfg.num_layers - 1})
        record = {}
        torch_logits(cfg, w, model.vocab_size, ids, True, torch.float64, record)
        entry = {"model": variant, "ids": ids, "layers": []}
        for layer in layers:
            got = ref.inspect(model, ids, layer)
            for p in ref.PROJS:
                worst = max(worst, float(np.max(np.abs(got["theta"][p] - record[(layer, p)]))))
            layer_entry = {"layer": layer, "theta": {p: got["theta"][p].tolist() for p in ref.PROJS}}
            if layer == 0:
                worst = max(worst, float(np.max(np.abs(got["attention"] - record[(layer, "attention")]))))
                layer_entry["attention"] = got["attention"].tolist()
            entry["layers"].append(layer_entry)
        out["models"].append(entry)
    assert worst < 1e-10, worst
    write_json(os.path.join(OUT, "inspect.json"), out)
    return worst


LENS_TOP = 5  # tokens per position the logit lens keeps (the inspector's hover shows 5)
ACTION_GREEDY_TOKENS = 16


def action_set(model, ids):
    """The interventions actions.json runs under: every kind of Pattention (q, v, proj, ffn), factors 0 (knock out),
    2, 3, 0.5 and a negative one; the FFN slots are the ones the prompt uses most, so the change shows."""
    last = model.cfg.num_layers - 1
    used = lambda layer: int(np.argmax(ref.inspect(model, ids, layer)["theta"]["ffn"].sum(axis=0)))  # noqa: E731
    return [(0, "ffn", used(0), 0.0), (0, "proj", 5, -1.5), (last, "query", 3, 2.0), (last, "value", 1, 0.5),
            (last, "ffn", used(last), 3.0)]


def actions_fixture(models):
    """tests/fixtures/actions.json: for every model folder (all three activations and bf16 weights), INSPECT_TEXT run
    under a set of interventions (logits of every position, Theta of the affected FFNs, greedy tokens when no step is
    within the margin of a tie, the eval text's perplexity), every value parameter token's search score for one
    prompt token, and the logit lens (each block's top LENS_TOP next tokens at each position, no interventions).
    numpy only: the reference computes everything. Returns the largest |lens last block - softmax(logits)|."""
    out, worst = {"text": INSPECT_TEXT, "lens_top": LENS_TOP, "models": []}, 0.0
    for name, model, tok in models:
        ids = tok.encode(INSPECT_TEXT, add_special_tokens=False).ids
        chosen = action_set(model, ids)
        scales = collections.defaultdict(list)
        for layer, proj, slot, factor in chosen:
            scales[(layer, proj)].append((slot, factor))
        record = {}
        logits = ref.forward(model, ids, record=record, interventions=scales)
        theta = {f"{layer}:ffn": record[(layer, "ffn")].tolist() for layer, proj, _, _ in chosen if proj == "ffn"}
        acted = lambda ctx: ref.forward(model, ctx, interventions=scales)[-1]  # noqa: E731
        greedy = robust_generate(model, ids, dict(ref.GREEDY, max_tokens=ACTION_GREEDY_TOKENS), f"{name}/actions",
                                 acted)
        eval_ids = tok.encode(EVAL_TEXT, add_special_tokens=False).ids
        scored, nll, _ = ref.perplexity(model, eval_ids, 64, 32, scales)
        token = ids[2]
        lens = ref.logit_lens(model, ids)
        worst = max(worst, float(np.max(np.abs(lens[-1] - np.exp(ref.log_softmax(ref.forward(model, ids)))))))
        order = np.argsort(-lens, axis=-1, kind="stable")[..., :LENS_TOP]
        top = [[[[int(i), float(lens[layer, t, i])] for i in order[layer, t]] for t in range(len(ids))]
               for layer in range(model.cfg.num_layers)]
        out["models"].append({
            "model": name, "ids": ids, "interventions": [list(c) for c in chosen],
            "logits": logits.tolist(), "theta": theta, "greedy": None if greedy is None else greedy[1],
            "eval": {"ids": eval_ids, "window": 64, "stride": 32, "tokens_scored": scored, "nll_mean": nll},
            "search": {"token": token, "scores": ref.search(model, token).tolist()},
            "lens": top,
        })
    assert worst < 1e-12, worst
    write_json(os.path.join(OUT, "actions.json"), out)
    return worst


def logit_spread(exp):
    lg = np.array([row for c in exp["cases"] for row in c["logits"]])
    return float(np.mean(np.std(lg, axis=1)))


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = train_tokenizer()
    tok_json = tok.to_str(pretty=True)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    rows = (vocab + 63) // 64 * 64
    summary = {}
    inspected = []  # (variant, model, config, weights, tokenizer) for inspect.json
    acted = []  # (folder, model, tokenizer) for actions.json

    for vi, (variant, spec) in enumerate(VARIANTS.items()):
        folder = os.path.join(OUT, variant)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        config = {k: v for k, v in spec.items() if k not in ("seed", "eos_scale")} | BASE_CONFIG
        config |= {"norm_activation_type": variant, "vocab_size": rows}
        write_json(os.path.join(folder, "config.json"), config)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8", newline="\n") as f:
            f.write(tok_json)
        w = init_weights(spec, rows)
        torch.save(collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in w.items()),
                   os.path.join(folder, "pytorch_model.bin"))
        globals_ = check_pickle_globals(os.path.join(folder, "pytorch_model.bin"))
        model = ref.load_model(folder)  # round trip through the written files
        exp = expected_for(model, tok, variant, vi, long_case=variant == "l2_norm_gelu")
        write_json(os.path.join(folder, "expected.json"), exp)
        stops = sum(len(r["ids"]) < r["max_tokens"] for c in exp["cases"] for r in c["sampled"])
        assert stops > 0 or variant != "l2_norm_gelu", "no l2_norm_gelu run stops on <|endoftext|>"
        summary[variant] = (cross_check(model, ref.Config(config), w, exp, True),
                            f32_agreement(model, ref.Config(config), w, exp, True), logit_spread(exp))
        inspected.append((variant, model, ref.Config(config), w, tok))
        acted.append((variant, model, tok))

        names = {ref.authors_name(j, p, kv): ref.project_name(j, p, kv)
                 for j in range(spec["num_layers"]) for p in ref.PROJS for kv in ("key", "value")}
        L = spec["num_layers"]
        names |= {"sequential.0.word_embeddings.weight": "embed.weight",
                  f"sequential.{L + 3}.norm.weight": "final_norm.weight",
                  f"sequential.{L + 3}.norm.bias": "final_norm.bias"}
        for fmt in ("q8", "q4"):  # the weights quantized, project layout + names
            name = f"{variant}_{fmt}"
            qf = os.path.join(OUT, name)
            write_quantized(qf, fmt, w, names, config, tok_json)
            mq = ref.load_model(qf)
            expq = expected_for(mq, tok, name, vi, long_case=False)
            write_json(os.path.join(qf, "expected.json"), expq)
            wq = {"embed.weight": mq.embed, "final_norm.weight": mq.final_w, "final_norm.bias": mq.final_b}
            wq |= {ref.project_name(j, p, kv): mq.blocks[j][p][i]
                   for j in range(L) for p in ref.PROJS for i, kv in enumerate(("key", "value"))}
            summary[name] = (cross_check(mq, ref.Config(config), wq, expq, False),
                             f32_agreement(mq, ref.Config(config), wq, expq, False), logit_spread(expq))

        if variant == "l2_norm_gelu":  # same weights rounded to bf16, project layout + names
            bf = os.path.join(OUT, "l2_norm_gelu_bf16")
            shutil.rmtree(bf, ignore_errors=True)
            os.makedirs(bf)
            write_json(os.path.join(bf, "config.json"), config | {"torch_dtype": "bfloat16"})
            shutil.copyfile(os.path.join(folder, "tokenizer.json"), os.path.join(bf, "tokenizer.json"))
            wb, tensors = {}, {}
            for k, v in w.items():
                wb[names[k]], tensors[names[k]] = to_bf16(v)
            save_file(tensors, os.path.join(bf, "model.safetensors"), metadata={"format": "pt"})
            mb = ref.load_model(bf)
            expb = expected_for(mb, tok, "l2_norm_gelu_bf16", vi, long_case=False)
            write_json(os.path.join(bf, "expected.json"), expb)
            acted.append(("l2_norm_gelu_bf16", mb, tok))
            summary["l2_norm_gelu_bf16"] = (cross_check(mb, ref.Config(config), wb, expb, False),
                                            f32_agreement(mb, ref.Config(config), wb, expb, False), logit_spread(expb))

    inspect_err = inspect_fixture(inspected)
    lens_err = actions_fixture(acted)

    write_json(os.path.join(OUT, "rng.json"), {"cases": [
        {"seed": s, "step": t, "hash": ref.pcg_hash(ref.pcg_hash(s) ^ t), "uniform": ref.uniform(s, t)}
        for s in (0, 1, 42, 12345, 2**32 - 1) for t in (0, 1, 2, 3, 4, 5, 1000)]})

    rngp = np.random.default_rng(99)
    pcases = []
    for kind in ("l2_norm_gelu", "gelu_l2_norm", "softmax"):
        x = rngp.standard_normal((4, 5)).astype(np.float32)
        x[2] = 0  # an all-zero input row gives an all-zero score row: the degenerate case
        k = (rngp.standard_normal((7, 5)) / math.sqrt(5)).astype(np.float32)
        v = (rngp.standard_normal((7, 3)) / math.sqrt(7)).astype(np.float32)
        s = x.astype(np.float64) @ k.astype(np.float64).T
        pcases.append({"kind": kind, "x": x.tolist(), "keys": k.tolist(), "values": v.tolist(),
                       "theta": ref.normalize_scores(s, kind).tolist(),
                       "out": ref.pattention(x.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                             kind).tolist()})
    write_json(os.path.join(OUT, "pattention.json"), {"cases": pcases})

    neox = Tokenizer.from_file(NEOX_TOKENIZER)
    with open(NEOX_TOKENIZER, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    write_json(os.path.join(OUT, "neox_tokenizer_cases.json"), {
        "tokenizer": "models/gpt-neox-20b/tokenizer.json", "sha256": sha,
        "vocab_size": neox.get_vocab_size(with_added_tokens=True),
        "cases": [{"text": s, "ids": neox.encode(s, add_special_tokens=False).ids} for s in NEOX_TEXTS]})

    print("pickle globals:", globals_)
    for k, (err, err32, spread) in summary.items():
        print(f"{k}: max |reference - torch f64| = {err:.2e}, max |reference - torch f32| = {err32:.2e} (all ids "
              f"equal), mean per-position logit std = {spread:.3f}")
    print(f"inspect.json: max |reference - torch f64| over Theta and attention = {inspect_err:.2e}")
    print(f"actions.json: max |lens after the last block - softmax(logits)| = {lens_err:.2e}")
    for k in ("greedy_margin", "top_k_margin", "top_p_margin", "draw_margin"):
        print(f"min {k} = {STATS[k][0]:.3e} at {STATS[k][1]}")
    print("seed retries:", {k: v for k, v in SEED_TRIES.items() if v})


if __name__ == "__main__":
    main()
