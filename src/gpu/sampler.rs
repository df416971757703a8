//! The next token, chosen on the device: repetition penalty, argmax, and the full seeded sampler
//! of `crate::sampling` (top-k, temperature, top-p, pcg_hash draw) in one single-workgroup dispatch.

use super::context::{Access, Encoder, GpuContext, Kernel};
use crate::sampling::SamplingParams;

pub(crate) struct Sampler {
    kernel: Kernel,
}

impl Sampler {
    pub fn new(ctx: &GpuContext) -> Sampler {
        let access = [Access::ReadWrite, Access::Read, Access::ReadWrite, Access::ReadWrite];
        Sampler { kernel: Kernel::new(ctx, "sampler", include_str!("../../shaders/sampler.wgsl"), &access) }
    }

    /// Binds the logits row (modified in place by the penalty), the distinct context ids, a
    /// scratch row of probabilities, and the one-word output.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        logits: &wgpu::Buffer,
        context: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        token: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[logits, context, probs, token])
    }

    /// Samples from the first `vocab` logits; `n_context` distinct ids are in the context buffer.
    pub fn encode(
        &self,
        enc: &mut Encoder,
        bind: &wgpu::BindGroup,
        vocab: usize,
        n_context: usize,
        params: &SamplingParams,
        step: u32,
    ) {
        let words = [
            vocab as u32,
            n_context as u32,
            params.temperature.to_bits(),
            params.top_k.min(u32::MAX as usize) as u32,
            params.top_p.to_bits(),
            params.repetition_penalty.to_bits(),
            params.seed,
            step,
        ];
        enc.dispatch(&self.kernel, bind, &words, [1, 1, 1]);
    }
}

/// The context's distinct ids: the penalty applies once per id however often it occurs.
pub(crate) fn distinct(context: &[u32]) -> Vec<u32> {
    let mut ids = context.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::context::{f32_bytes, read_back, u32_bytes, ParamPages};
    use crate::gpu::testing::{random, test_context};
    use crate::sampling::sample;

    /// Runs the sampler on one row of logits.
    fn gpu_sample(sampler: &Sampler, logits: &[f32], context: &[u32], params: &SamplingParams, step: u32) -> u32 {
        let ctx = test_context();
        let ids = distinct(context);
        let logits_buf = ctx.storage_init("logits", &f32_bytes(logits));
        let context_buf = ctx.storage_init("context", &u32_bytes(&ids));
        let probs = ctx.storage("probs", (logits.len() * 4) as u64);
        let token = ctx.storage("token", 4);
        let read = ctx.buffer("read", 4, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let bind = sampler.bind(&ctx, &logits_buf, &context_buf, &probs, &token);
        let mut pages = ParamPages::default();
        let mut enc = Encoder::new(&ctx, &mut pages);
        sampler.encode(&mut enc, &bind, logits.len(), ids.len(), params, step);
        enc.copy(&token, 0, &read, 4);
        enc.submit();
        let bytes = pollster::block_on(read_back(&ctx, &read, 4, None)).unwrap();
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, repetition_penalty: f32, seed: u32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, repetition_penalty, seed, max_tokens: 1 }
    }

    #[test]
    fn greedy_takes_the_lowest_id_among_ties_after_the_penalty() {
        let sampler = Sampler::new(&test_context());
        let mut logits = random(1000, 61);
        logits[17] = 3.0;
        logits[400] = 3.0;
        logits[999] = 2.0;
        let greedy = params(0.0, 0, 1.0, 1.0, 0);
        assert_eq!(gpu_sample(&sampler, &logits, &[], &greedy, 0), 17);
        // Penalty 2 halves both 3.0s (17 appears twice in the context: penalised once).
        let penalised = params(0.0, 0, 1.0, 2.0, 0);
        let context = [17, 400, 17, 5];
        assert_eq!(gpu_sample(&sampler, &logits, &context, &penalised, 0), sample(&logits, &context, &penalised, 0));
        assert_eq!(gpu_sample(&sampler, &logits, &context, &penalised, 0), 999);
    }

    #[test]
    fn seeded_sampling_matches_the_cpu_spec() {
        let sampler = Sampler::new(&test_context());
        // Peaked and flat rows, a vocabulary not a power of two, and every cut alone and together.
        let sets = [
            params(1.0, 0, 1.0, 1.0, 1),
            params(0.7, 40, 1.0, 1.0, 2),
            params(1.3, 0, 0.9, 1.0, 3),
            params(0.8, 50, 0.95, 1.3, 4),
            params(1.0, 1, 1.0, 1.0, 5),
            params(2.0, 0, 0.05, 1.0, 6),
            params(0.5, 5000, 0.5, 0.8, 7),
        ];
        for (r, vocab) in [(0u32, 50_277usize), (1, 1000), (2, 7)] {
            for (spread, row_seed) in [(8.0f32, 70 + r), (0.5, 80 + r)] {
                let logits: Vec<f32> = random(vocab, row_seed).iter().map(|v| v * spread).collect();
                let context: Vec<u32> = (0..30).map(|i| (i * 37 % vocab) as u32).collect();
                for p in &sets {
                    for step in 0..6 {
                        let want = sample(&logits, &context, p, step);
                        let got = gpu_sample(&sampler, &logits, &context, p, step);
                        assert_eq!(got, want, "vocab {vocab} spread {spread} {p:?} step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn ties_are_ordered_by_id_for_top_k_and_the_draw() {
        let sampler = Sampler::new(&test_context());
        // Many equal logits: the top-k boundary and the draw both fall inside runs of ties.
        let logits: Vec<f32> = (0..300).map(|i| [1.0f32, 0.5, 0.5, -0.0, 0.0][i % 5]).collect();
        for p in [params(1.0, 70, 1.0, 1.0, 9), params(1.0, 0, 0.5, 1.0, 10), params(0.3, 3, 0.99, 1.0, 11)] {
            for step in 0..20 {
                assert_eq!(
                    gpu_sample(&sampler, &logits, &[], &p, step),
                    sample(&logits, &[], &p, step),
                    "{p:?} step {step}"
                );
            }
        }
    }
}
