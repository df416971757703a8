"""Peer benchmark: `tokenformer bench` (CPU backend) side by side with the same model in PyTorch eager with a KV cache.

Not part of CI. Both run the same model folder (a random model of an official shape, written by
`tokenformer synthetic`, unless --model names one), the same prompt (`tokenformer bench`'s pseudo-random ids) and the
same counts (prefill of --prompt-len tokens, then --gen greedy decode steps), in f32, at the same thread count.
PyTorch: torch.set_num_threads(T), torch.inference_mode(), tools/tokenformer_torch.py with its KVCache, the head
over the last position only during prefill (as the CPU backend does). tokenformer: `bench --backend cpu --threads T`
with RAYON_NUM_THREADS=T; when the binary has no --threads, it runs as built and the output says so.

Each thread count: one warm-up run of each, then --repeat runs of each, interleaved (so load from other processes
hits both alike); the best prefill and the best decode of each side count. Ratio = tokenformer / PyTorch (> 1: ours
is faster). Run it on an otherwise idle machine: other processes on the cores lower both sides' figures, the
multi-thread ones most (the output prints the load average before and after timing).

Before timing, the two are checked to compute the same thing: `tokenformer logits` on a short prompt against
PyTorch's full forward and its KV-cache forward (max |logit difference| printed), and `tokenformer generate
--temperature 0` against PyTorch's greedy decode with the cache.

Install (PyPI's torch wheel is the CUDA build; its import needs the CUDA libraries it depends on, several GB):
    python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install -r tools/requirements.txt
    cargo build --release
Run (from the repository root):
    /tmp/peer-venv/bin/python tools/peer_bench.py                      # 150m, all cores
    /tmp/peer-venv/bin/python tools/peer_bench.py --threads 1 2 --size 450m --repeat 5 --json
    /tmp/peer-venv/bin/python tools/peer_bench.py --model DIR          # an existing model folder
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)

from reference import pcg_hash  # noqa: E402
from tokenformer_torch import KVCache, from_project_state  # noqa: E402

SIZES = ("150m", "450m", "900m", "1.5b")
TOKENIZER = os.path.join(ROOT, "models", "gpt-neox-20b", "tokenizer.json")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, env=None):
    """stdout of cmd; exits with its stderr when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


# ----------------------------------------------------------------------------------------------- PyTorch side


def load_torch(folder):
    """(model, vocab_size): the folder's weights as f32 in tokenformer_torch.TokenFormer; vocab_size = logits the
    CLI prints (its tokenizer's size; the embedding may have padding rows beyond it)."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    kind = cfg.get("norm_activation_type", "l2_norm_gelu")
    if kind != "l2_norm_gelu":
        sys.exit(f"tokenformer_torch.py implements l2_norm_gelu only; this model uses {kind}")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    model = from_project_state(cfg, load_file(os.path.join(folder, "model.safetensors")), dtype=torch.float32)
    return model.eval(), vocab


def torch_logits(model, ids, vocab, cached):
    """Logits [T, vocab] of every position; cached: first half in one call, then one token per call (KV cache)."""
    x = torch.tensor(ids)[None]
    if not cached:
        return model(x)[0, :, :vocab]
    cache = KVCache(len(model.blocks))
    half = len(ids) // 2
    rows = [model(x[:, :half], cache)[0]] + [model(x[:, i : i + 1], cache)[0] for i in range(half, len(ids))]
    return torch.cat(rows)[:, :vocab]


def torch_generate(model, ids, vocab, n):
    """Greedy decode with the cache, as `tokenformer generate --temperature 0` (id 0 stops, not returned)."""
    cache = KVCache(len(model.blocks))
    logits = model(torch.tensor(ids)[None], cache, last_only=True)
    out = []
    for _ in range(n):
        tok = int(logits[0, -1, :vocab].argmax())
        if tok == 0:
            break
        out.append(tok)
        logits = model(torch.tensor([[tok]]), cache, last_only=True)
    return out


def torch_timing(model, prompt, vocab, gen):
    """(prefill s, decode s) as tokenformer::bench::time_generation: prefill = the prompt's forward; decode = gen
    steps of one-token forward + argmax, the first fed with the prefill's argmax."""
    cache = KVCache(len(model.blocks))
    x = torch.tensor(prompt)[None]
    start = time.perf_counter()
    logits = model(x, cache, last_only=True)
    prefill = time.perf_counter() - start
    tok = int(logits[0, -1, :vocab].argmax())
    start = time.perf_counter()
    for _ in range(gen):
        logits = model(torch.tensor([[tok]]), cache, last_only=True)
        tok = int(logits[0, -1, :vocab].argmax())
    return prefill, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- tokenformer side


def has_threads_option(binary):
    return "--threads" in run([binary, "bench", "--help"])


def tokenformer_timing(binary, folder, prompt_len, gen, threads, threads_option):
    """bench's JSON report, run at `threads` (RAYON_NUM_THREADS too, for a rayon build without --threads)."""
    cmd = [binary, "bench", "--model", folder, "--backend", "cpu", "--prompt-len", str(prompt_len),
           "--gen", str(gen), "--json"]
    if threads_option:
        cmd += ["--threads", str(threads)]
    return json.loads(run(cmd, env=dict(os.environ, RAYON_NUM_THREADS=str(threads))))


# ----------------------------------------------------------------------------------------------- the run


def check(binary, folder, model, vocab, n_ids=8, n_gen=8):
    """Same computation: CLI logits vs PyTorch (full and KV-cache forward), and greedy ids."""
    ids = [pcg_hash(1000 + i) % vocab for i in range(n_ids)]
    ids_arg = ",".join(map(str, ids))
    cli = torch.tensor(json.loads(run([binary, "logits", "--model", folder, "--ids", ids_arg]))["logits"])
    with torch.inference_mode():
        full = float((torch_logits(model, ids, vocab, False) - cli).abs().max())
        cached = float((torch_logits(model, ids, vocab, True) - cli).abs().max())
        ours = json.loads(run([binary, "generate", "--model", folder, "--ids", ids_arg, "--temperature", "0",
                               "--max-tokens", str(n_gen), "--json"]))["ids"]
        theirs = torch_generate(model, ids, vocab, n_gen)
    same = sum(a == b for a, b in zip(ours, theirs)) if len(ours) == len(theirs) else 0
    return {"prompt_ids": ids, "logit_rows": len(ids), "vocab": vocab, "max_abs_diff_full": full,
            "max_abs_diff_cached": cached, "max_abs_logit": float(cli.abs().max()),
            "greedy_tokenformer": ours, "greedy_pytorch": theirs, "greedy_same": same == len(ours) == len(theirs)}


def bench(binary, folder, model, vocab, threads, args, threads_option):
    torch.set_num_threads(threads)
    prompt = [pcg_hash(i) % vocab for i in range(args.prompt_len)]  # bench's prompt
    pt, tf, label = [], [], None
    with torch.inference_mode():
        for rep in range(args.repeat + 1):  # rep 0: warm-up, not counted
            r = tokenformer_timing(binary, folder, args.prompt_len, args.gen, threads, threads_option)
            label = r["backend"]
            p, d = torch_timing(model, prompt, vocab, args.gen)
            if rep:
                tf.append((r["prefill_tokens_per_s"], r["decode_tokens_per_s"]))
                pt.append((args.prompt_len / p, args.gen / d))
    best = lambda runs: {"prefill_tokens_per_s": max(r[0] for r in runs), "decode_tokens_per_s": max(r[1] for r in runs)}
    p, t = best(pt), best(tf)
    return {
        "threads": threads,
        "pytorch": dict(p, backend=f"pytorch {torch.__version__} eager (f32)", threads=torch.get_num_threads()),
        "tokenformer": dict(t, backend=f"tokenformer {label}", threads_option=threads_option),
        "ratio": {k.split("_")[0]: t[k] / p[k] for k in p},
    }


def release_binary(name):
    """Where `cargo build --release` puts binary `name`: cargo's target directory as `cargo metadata` reports it
    (CARGO_TARGET_DIR or a cargo config may move it)."""
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--manifest-path",
                           os.path.join(ROOT, "Cargo.toml")], check=True, capture_output=True, text=True).stdout
    return os.path.join(json.loads(meta)["target_directory"], "release", name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", choices=SIZES, default="150m", help="shape of the synthetic model (default 150m)")
    ap.add_argument("--model", help="model folder to use (made with `tokenformer synthetic` when missing); "
                    "default: a temporary folder")
    ap.add_argument("--bin", help="tokenformer binary (default: the release build in cargo's target directory)")
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count()],
                    help="thread counts to measure (default: all cores, %(default)s)")
    ap.add_argument("--prompt-len", type=int, default=64, help="as tokenformer bench (default 64)")
    ap.add_argument("--gen", type=int, default=32, help="decode steps, as tokenformer bench (default 32)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side, best counts (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    args.bin = args.bin or release_binary("tokenformer")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found: cargo build --release, or give --bin")

    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        folder = args.model or os.path.join(tmp, args.size)
        if not os.path.exists(os.path.join(folder, "model.safetensors")):
            log(f"writing a random {args.size} model to {folder}")
            run([args.bin, "synthetic", "--size", args.size, "--tokenizer", TOKENIZER, folder])
        model, vocab = load_torch(folder)
        log("checking that PyTorch and tokenformer compute the same logits")
        chk = check(args.bin, folder, model, vocab)
        threads_option = has_threads_option(args.bin)
        load_before = os.getloadavg()[0]
        runs = []
        for t in args.threads:
            log(f"timing at {t} thread(s): warm-up + {args.repeat} runs each")
            runs.append(bench(args.bin, folder, model, vocab, t, args, threads_option))

    report = {"model": args.model or f"synthetic {args.size}", "prompt_len": args.prompt_len, "gen": args.gen,
              "repeat": args.repeat, "cpu_count": os.cpu_count(), "tokenformer_threads_option": threads_option,
              "load_average_1min": [load_before, os.getloadavg()[0]], "check": chk, "runs": runs}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['model']}: prefill {args.prompt_len} tokens, decode {args.gen} tokens, f32, best of "
          f"{args.repeat}, {os.cpu_count()} cores")
    print(f"same computation: max |logit diff| vs `tokenformer logits` over {chk['logit_rows']} x {vocab}: "
          f"{chk['max_abs_diff_full']:.2e} (full forward), {chk['max_abs_diff_cached']:.2e} (KV cache); "
          f"largest |logit| {chk['max_abs_logit']:.2f}; greedy {len(chk['greedy_tokenformer'])} ids "
          f"{'identical' if chk['greedy_same'] else 'DIFFER'}")
    load = report["load_average_1min"]
    busy = " (other work was running: the figures are low, multi-thread ones most)" if max(load) > 0.5 else ""
    print(f"load average (1 min) before/after timing: {load[0]:.2f}/{load[1]:.2f}{busy}")
    if not threads_option:
        print("note: this tokenformer binary has no `bench --threads`: it ran as built (its CPU backend's own "
              "thread count), with RAYON_NUM_THREADS=T set")
    w = max(len(r[k]["backend"]) for r in runs for k in ("pytorch", "tokenformer"))
    print(f"{'backend':<{w}}  threads  prefill tok/s  decode tok/s")
    for r in runs:
        for k in ("pytorch", "tokenformer"):
            x = r[k]
            print(f"{x['backend']:<{w}}  {r['threads']:>7}  {x['prefill_tokens_per_s']:>13.1f}  "
                  f"{x['decode_tokens_per_s']:>12.2f}")
        print(f"{'ratio tokenformer / pytorch':<{w}}  {r['threads']:>7}  {r['ratio']['prefill']:>13.2f}  "
              f"{r['ratio']['decode']:>12.2f}")


if __name__ == "__main__":
    main()
