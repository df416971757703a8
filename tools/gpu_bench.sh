#!/usr/bin/env bash
# The GPU decode benchmark for a machine with a real GPU (not part of CI): the released 150M and
# 1.5B shapes through native wgpu (Vulkan), with the release binary built on another machine.
#   cargo build --release && tools/gpu_bench.sh [BINARY] [GENERATED_TOKENS]
# (BINARY defaults to the release build in cargo's target directory, as `cargo metadata` reports it.)
# Prints each run's report: prefill and decode tokens/s, weight bytes per token against the
# copy-shader and read-only bandwidths, dispatches per block, and per kind of dispatch its
# workgroups, device time (timestamp queries) and the GB/s its weights are read at.
# Each run has its own time limit (RUN_TIMEOUT seconds, default 120); one that fails or runs out
# is reported and the rest still run, so a lent machine's few minutes are never lost to one.
set -uo pipefail
bin=${1:-$(cargo metadata --format-version 1 --no-deps --manifest-path "$(dirname "$0")/../Cargo.toml" | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/tokenformer}
gen=${2:-128}
limit=${RUN_TIMEOUT:-120}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Every weight dtype first (q8 and q4 read their blocks in the kernels; their KV cache is f16, and
# one q4 run with an f32 cache shows what the cache costs). After the plain greedy runs: a long prompt (split attention over 1,024 positions), the demo
# page's sampling (the two-pass sampler, pipelined with a repetition penalty), the same without
# top-k (the vocabulary walked over many workgroups, then in one, as a CPU adapter does), a CPU
# adapter's kernel shapes (prefill in registers, the sampler in one workgroup), and the decode sums
# through workgroup memory alone, as browsers run them (no subgroups). Last, decode products with
# more and smaller workgroups than the default (at least 96): on a GPU of 132 multiprocessors the
# 1.5B products ran at 0.7-1.0 TB/s with about one workgroup per multiprocessor.
runs=(
    "150m f16" "150m f32" "150m q8" "150m q4" "1.5b f16" "1.5b f32" "1.5b q8" "1.5b q4"
    "150m q4 --kv-cache f32" "1.5b q4 --prompt-len 1024" "150m f16 --prompt-len 1024" "1.5b f16 --prompt-len 1024"
    "150m f16 --sample" "1.5b f16 --sample" "150m f16 --sample --top-k 0"
    "150m f16 --sample --top-k 0 --gpu-shapes false" "150m f16 --gpu-shapes false" "150m f16 --subgroups false"
    "1.5b f16 --subgroups false"
    "150m f16 --min-workgroups 384" "1.5b f16 --min-workgroups 192" "1.5b f16 --min-workgroups 384"
    "1.5b f16 --min-workgroups 768"
)
failed=0
for run in "${runs[@]}"; do
    set -- $run
    extra=("${@:3}")
    # A run names its own prompt length where it needs a long one.
    [[ " ${extra[*]-} " == *" --prompt-len "* ]] || extra+=(--prompt-len 64)
    echo "== $1 $2 ${extra[*]}"
    timeout -k 10 "$limit" "$bin" bench --synthetic "$1" --backend gpu --dtype "$2" --gen "$gen" "${extra[@]}"
    rc=$?
    [[ $rc == 0 ]] || { echo "!! exit status $rc (124: over ${limit} s)"; failed=1; }
done
exit $failed
