//! `tokenformer bench`: throughput figures and how close they come to the machine's measured limit.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::generation::Backend;
use crate::sampling::{argmax, pcg_hash, SamplingParams};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub backend: String,
    pub model: String,
    pub prompt_len: usize,
    pub generated: usize,
    /// How decoded tokens were chosen: "greedy", or the sampling parameters.
    pub sampling: String,
    pub time_to_first_token_ms: f64,
    /// The first decode step, not counted in the decode rate (it may compile kernels).
    pub first_decode_step_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub weight_bytes_per_token: usize,
    /// Weight bytes read per decoded token × decode tokens/s.
    pub achieved_gb_per_s: f64,
    /// The same hardware's bandwidth, measured in this run.
    pub limit_gb_per_s: f64,
    pub limit_measured_by: String,
    pub ratio: f64,
    /// The GPU's read-only bandwidth, measured in this run (a decode step only reads its weights),
    /// and the achieved bandwidth's ratio to it (GPU only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_limit_gb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    /// The wall-clock cost of an empty dispatch, measured in this run (GPU only): what each of a
    /// token's dispatches costs before its work, a floor under the time per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dispatch_us: Option<f64>,
    /// Compute dispatches and queue submissions per decoded token (GPU only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatches_per_token: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submissions_per_token: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatches_per_block: Option<u32>,
    /// Per kind of dispatch of a decoded token: dispatches and workgroups each (GPU only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dispatch_kinds: Vec<DispatchReport>,
    /// CPU time recording a decoded token's commands (GPU only); the rest of the time per token is
    /// the GPU's work, the submission and the read-back of the id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_ms_per_token: Option<f64>,
    /// The device's time in the dispatches of one decoded token, timed in a step of their own
    /// (GPU with timestamp queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ms_per_token: Option<f64>,
    /// Tokens of the prefill timed dispatch by dispatch (the prompt's first chunk), its device
    /// time and its dispatches per kind (GPU with timestamp queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_timed_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_gpu_ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefill_kinds: Vec<DispatchReport>,
}

#[derive(Debug, Serialize)]
pub struct DispatchReport {
    pub kind: String,
    pub dispatches: u32,
    pub min_workgroups: u32,
    pub max_workgroups: u32,
    /// The device's time in these dispatches, per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ms: Option<f64>,
    /// Weight bytes these dispatches read over their device time (products only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_gb_per_s: Option<f64>,
}

#[cfg(feature = "gpu")]
impl DispatchReport {
    /// A pass's dispatches per kind, and the device's time in all of them where it was timed.
    pub fn of_pass(stats: &crate::gpu::PassStats) -> (Vec<DispatchReport>, Option<f64>) {
        let kinds = stats
            .kinds
            .iter()
            .map(|k| DispatchReport {
                kind: k.name.to_string(),
                dispatches: k.dispatches,
                min_workgroups: k.min_workgroups,
                max_workgroups: k.max_workgroups,
                gpu_ms: k.gpu_ns.map(|ns| ns as f64 / 1e6),
                weight_gb_per_s: k
                    .gpu_ns
                    .filter(|&ns| ns > 0 && k.weight_bytes > 0)
                    .map(|ns| k.weight_bytes as f64 / ns as f64),
            })
            .collect();
        let total = stats.kinds.iter().map(|k| k.gpu_ns).sum::<Option<u64>>().map(|ns| ns as f64 / 1e6);
        (kinds, total)
    }
}

/// Several timed runs of the same pass as one: each kind's shortest device time. On a shared
/// host one timed step can run half as fast again as the next, and not every kind in the same
/// moment, so the best of a few shows what each kind costs.
#[cfg(feature = "gpu")]
pub fn fastest_per_kind(runs: &[crate::gpu::PassStats]) -> Option<crate::gpu::PassStats> {
    let mut best = runs.first()?.clone();
    for run in &runs[1..] {
        for (kind, other) in best.kinds.iter_mut().zip(&run.kinds) {
            kind.gpu_ns = match (kind.gpu_ns, other.gpu_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Some(best)
}

#[cfg(all(test, feature = "gpu"))]
mod tests {
    use super::*;
    use crate::gpu::{DispatchKind, PassStats};

    fn pass(times: [Option<u64>; 2]) -> PassStats {
        let kind = |name, gpu_ns| DispatchKind {
            name,
            dispatches: 12,
            min_workgroups: 18,
            max_workgroups: 18,
            weight_bytes: 1 << 20,
            gpu_ns,
        };
        PassStats {
            dispatches: 24,
            submissions: 1,
            per_block: 2,
            kinds: vec![kind("scores", times[0]), kind("values", times[1])],
        }
    }

    #[test]
    fn the_fastest_run_of_each_kind_is_kept() {
        let runs = [pass([Some(9), Some(4)]), pass([Some(7), Some(6)]), pass([None, Some(5)])];
        let best = fastest_per_kind(&runs).unwrap();
        let times: Vec<Option<u64>> = best.kinds.iter().map(|k| k.gpu_ns).collect();
        assert_eq!(times, [Some(7), Some(4)]);
        assert_eq!(best.dispatches, 24);
        assert!(fastest_per_kind(&[]).is_none());
    }
}

/// The pseudo-random prompt of `prompt_len` tokens the benchmark feeds.
pub fn prompt_ids(prompt_len: usize, vocab: usize) -> Vec<u32> {
    (0..prompt_len as u32).map(|i| pcg_hash(i) % vocab as u32).collect()
}

/// Seconds a generation took, from [`time_generation`].
pub struct GenerationTimes {
    pub time_to_first_token: f64,
    pub prefill: f64,
    /// The first decode step, timed apart: a driver may compile the decode kernels on first use
    /// (lavapipe does), which says nothing about throughput.
    pub first_step: f64,
    /// The `gen` decode steps after it.
    pub decode: f64,
}

/// Times a prefill of `prompt_len` pseudo-random tokens, then a first decode step and `gen` more,
/// sampled with `params` (the context the repetition penalty sees grows as a generation's does).
/// Decode steps go through `next_token`, so a backend that samples on the device returns only the
/// token id.
pub fn time_generation(
    backend: &mut dyn Backend,
    prompt_len: usize,
    gen: usize,
    params: &SamplingParams,
) -> Result<GenerationTimes> {
    let mut context = prompt_ids(prompt_len, backend.vocab_size());
    backend.reset();
    let start = Instant::now();
    let logits = backend.forward(&context, false)?;
    let prefill = start.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let time_to_first_token = start.elapsed().as_secs_f64();
    let mut decode_step = |next: u32, step: usize| {
        context.push(next);
        backend.next_token(&[next], &context, params, step as u32)
    };
    let first = Instant::now();
    next = decode_step(next, 0)?;
    let first_step = first.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    for step in 1..=gen {
        next = decode_step(next, step)?;
    }
    Ok(GenerationTimes { time_to_first_token, prefill, first_step, decode: decode_start.elapsed().as_secs_f64() })
}

/// Streaming read bandwidth of all the threads the CPU backend uses: the best of several passes in
/// which each thread sums its share of a buffer far larger than the caches, with the same
/// vectorised loop the CPU backend's matrix-vector products use.
pub fn cpu_read_bandwidth_gb_s() -> f64 {
    // black_box keeps the optimiser from folding the sum of a known constant buffer.
    let buf = std::hint::black_box(vec![1.0f32; 128 << 20]); // 512 MiB
    let share = buf.len().div_ceil(crate::cpu::parallel::threads());
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let start = Instant::now();
        crate::cpu::parallel::for_each(buf.chunks(share).collect(), |_, part| {
            let part = std::hint::black_box(part);
            std::hint::black_box(crate::cpu::kernels::dot(part, part));
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    // dot(part, part) streams each part once.
    (buf.len() * 4) as f64 / best / 1e9
}

/// The GPU's memory bandwidth, (copy, read): the best of several timed copies of a 256 MiB buffer
/// by a compute shader, counting the bytes read plus the bytes written, and the best of several
/// read-only sums of it, counting the bytes read. Each timing repeats the pass in one submission,
/// up to 64 times or about 50 ms, so a fast GPU's submission latency does not count as slowness.
#[cfg(feature = "gpu")]
pub fn gpu_bandwidth_gb_s(ctx: &crate::gpu::GpuContext) -> Result<(f64, f64)> {
    let mut probe = crate::gpu::CopyProbe::new(ctx, 256 << 20);
    let mut best = |read: bool| -> Result<f64> {
        let mut pass = |repeats: usize| -> Result<f64> {
            let start = Instant::now();
            if read {
                pollster::block_on(probe.run_read(ctx, repeats))?;
            } else {
                pollster::block_on(probe.run(ctx, repeats))?;
            }
            Ok(start.elapsed().as_secs_f64())
        };
        // The first pass is warm-up (allocation, pipeline creation), the second sizes the repeats.
        pass(1)?;
        let repeats = (0.05 / pass(1)?).clamp(1.0, 64.0) as usize;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            best = best.min(pass(repeats)? / repeats as f64);
        }
        Ok(best)
    };
    let (copy, read) = (best(false)?, best(true)?);
    Ok((probe.bytes_moved() as f64 / copy / 1e9, probe.bytes_read() as f64 / read / 1e9))
}

/// The wall-clock cost of one dispatch with next to no work, in µs: the best of several
/// submissions of 256 one-workgroup copies of 4 KiB. On software Vulkan this is the driver waking
/// its threads for each dispatch, a cost a decoded token pays once per dispatch whatever its
/// kernels do.
#[cfg(feature = "gpu")]
pub fn gpu_dispatch_us(ctx: &crate::gpu::GpuContext) -> Result<f64> {
    const REPEATS: usize = 256;
    let mut probe = crate::gpu::CopyProbe::new(ctx, 4096);
    pollster::block_on(probe.run(ctx, 1))?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        pollster::block_on(probe.run(ctx, REPEATS))?;
        best = best.min(start.elapsed().as_secs_f64() / REPEATS as f64);
    }
    Ok(best * 1e6)
}
