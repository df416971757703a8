#!/usr/bin/env bash
# Bounded fuzzing of every parser of outside data (cargo-fuzz, libFuzzer, nightly Rust).
#   bash tools/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
# New inputs that reach new code are added to fuzz/corpus/<target>/ (commit them: tests/fuzz_corpus.rs
# replays the corpora on stable Rust in every `cargo test`). A crash stops the run and leaves its
# input in fuzz/artifacts/<target>/; turn it into a regression test, then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_index pytorch_state_dict weights_stream config load_model)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --help >/dev/null 2>&1 || cargo install cargo-fuzz
for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  # -rss_limit_mb / -malloc_limit_mb: an input that makes the parser allocate more than this is a bug too.
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|Done|artifact_prefix)' || true
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "!! $target: crash inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
  # Keep the committed corpus small: the inputs that cover distinct code (cmin), then at most the
  # 150 smallest besides the seeds (tools/fuzz_seeds.py writes those again).
  # cmin drops inputs that add no coverage, seeds included: they are put back after it.
  seeds=$(mktemp -d)
  cp fuzz/corpus/"$target"/seed-* "$seeds"/
  cargo +nightly fuzz cmin --fuzz-dir fuzz "$target" "fuzz/corpus/$target" >/dev/null 2>&1
  cp "$seeds"/seed-* "fuzz/corpus/$target/" && rm -r "$seeds"
  (cd "fuzz/corpus/$target" && ls -S -r | grep -v '^seed-' | tail -n +151 | xargs -r rm -f)
done
# Seeds are rewritten from the fixtures when numpy and torch are there (tools/requirements.txt).
python3 -c 'import numpy, torch' 2>/dev/null && python3 tools/fuzz_seeds.py || echo 'seeds kept as they were (no numpy/torch to rewrite them)'
