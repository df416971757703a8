//! The next token, chosen on the device: repetition penalty, argmax, and the full seeded sampler
//! of `crate::sampling` (top-k, temperature, top-p, pcg_hash draw). A first pass over many
//! workgroups (one per chunk of the vocabulary) applies the penalty, finds each chunk's maximum and,
//! for top-k sampling, each chunk's top k; one workgroup then finishes over those candidates. A CPU
//! adapter, where the chunks' sorts cost more (in barriers) than they save, runs the first pass in
//! one workgroup and the second over the whole vocabulary.

use super::context::{u32_bytes, Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use crate::sampling::SamplingParams;

shader_params!(SamplerParams for "lib/sampling.wgsl" {
    vocab: u32, temperature: f32, top_k: u32, top_p: f32, penalty: f32, seed: u32, step: u32, chunk: u32, chunks: u32,
    per_chunk: u32,
});

/// Ids per workgroup of the first pass (CHUNK in the shaders).
const CHUNK: usize = 1024;

pub(crate) struct Sampler {
    chunks: Kernel,
    merge: Kernel,
    /// Top-k candidates from chunks over many workgroups (GPUs).
    candidates: bool,
}

/// The sampler bound to a row of logits, with its scratch buffers.
pub(crate) struct SamplerBinding {
    bind: wgpu::BindGroup,
    /// One bit per id of the vocabulary: set for the ids the repetition penalty applies to. The
    /// sampler sets its pick's bit, so a step decoded ahead on the device penalises it.
    penalised: wgpu::Buffer,
    vocab: usize,
}

impl Sampler {
    pub fn new(ctx: &GpuContext, candidates: bool) -> Sampler {
        let lib = include_str!("../../shaders/lib/sampling.wgsl");
        let source = |body: &str| format!("{lib}\n{body}");
        let chunks = Kernel::new(
            ctx,
            "sampler chunks",
            &source(include_str!("../../shaders/sampler_chunks.wgsl")),
            &[Access::ReadWrite; 6],
        );
        let merge = chunks.sibling(ctx, "sampler", &source(include_str!("../../shaders/sampler.wgsl")));
        Sampler { chunks, merge, candidates }
    }

    /// Binds the first `vocab` logits (modified in place by the penalty) and the one-word output.
    pub fn bind(&self, ctx: &GpuContext, logits: &wgpu::Buffer, vocab: usize, token: &wgpu::Buffer) -> SamplerBinding {
        let chunks = vocab.div_ceil(CHUNK) as u64;
        let penalised = ctx.storage("penalised ids", vocab.div_ceil(32) as u64 * 4);
        let probs = ctx.storage("probabilities", vocab as u64 * 4);
        let candidates = ctx.storage("sampler candidates", chunks * CHUNK as u64 * 4);
        let chunk_max = ctx.storage("chunk maxima", chunks * 8);
        let bind = self.chunks.bind(ctx, &[logits, &penalised, &probs, token, &candidates, &chunk_max]);
        SamplerBinding { bind, penalised, vocab }
    }

    /// Samples from the logits; the penalised ids are those last written by
    /// [`SamplerBinding::write_penalised`] and picked since.
    pub fn encode(&self, enc: &mut Encoder, b: &SamplerBinding, params: &SamplingParams, step: u32) {
        let chunk = if self.candidates { CHUNK } else { b.vocab };
        let chunks = b.vocab.div_ceil(chunk);
        // Each chunk's top k hold the global top k; past a chunk's size every id is a candidate.
        let sorts = self.candidates && params.temperature > 0.0 && params.top_k < b.vocab.min(CHUNK);
        let per_chunk = if sorts { params.top_k } else { 0 };
        let words = SamplerParams {
            vocab: b.vocab as u32,
            temperature: params.temperature,
            top_k: params.top_k.min(u32::MAX as usize) as u32,
            top_p: params.top_p,
            penalty: params.repetition_penalty,
            seed: params.seed,
            step,
            chunk: chunk as u32,
            chunks: chunks as u32,
            per_chunk: per_chunk as u32,
        };
        enc.dispatch(&self.chunks, &b.bind, &words, [chunks as u32, 1, 1]);
        enc.dispatch(&self.merge, &b.bind, &words, [1, 1, 1]);
    }
}

impl SamplerBinding {
    /// Marks the context's ids (prompt and generated so far) as the ones the penalty applies to.
    pub fn write_penalised(&self, ctx: &GpuContext, context: &[u32]) {
        let mut bits = vec![0u32; self.vocab.div_ceil(32)];
        for &id in context.iter().filter(|&&id| (id as usize) < self.vocab) {
            bits[id as usize / 32] |= 1 << (id % 32);
        }
        ctx.queue.write_buffer(&self.penalised, 0, &u32_bytes(&bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::context::{f32_bytes, read_back, ParamPages};
    use crate::gpu::testing::{random, test_context};
    use crate::sampling::sample;

    /// Runs the sampler on one row of logits.
    fn gpu_sample(sampler: &Sampler, logits: &[f32], context: &[u32], params: &SamplingParams, step: u32) -> u32 {
        let ctx = test_context();
        let logits_buf = ctx.storage_init("logits", &f32_bytes(logits));
        let token = ctx.storage("token", 4);
        let read = ctx.buffer("read", 4, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let binding = sampler.bind(&ctx, &logits_buf, logits.len(), &token);
        binding.write_penalised(&ctx, context);
        let mut pages = ParamPages::default();
        let mut enc = Encoder::new(&ctx, &mut pages);
        sampler.encode(&mut enc, &binding, params, step);
        enc.copy(&token, 0, &read, 4);
        enc.submit();
        let bytes = pollster::block_on(read_back(&ctx, &read, 4, None)).unwrap();
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// The sampler as GPUs run it (top-k candidates from many workgroups) and as CPU adapters do.
    fn both() -> [Sampler; 2] {
        [true, false].map(|candidates| Sampler::new(&test_context(), candidates))
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, repetition_penalty: f32, seed: u32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, repetition_penalty, seed, max_tokens: 1 }
    }

    #[test]
    fn greedy_takes_the_lowest_id_among_ties_after_the_penalty() {
        for sampler in both() {
            greedy_cases(&sampler);
        }
    }

    fn greedy_cases(sampler: &Sampler) {
        let mut logits = random(1000, 61);
        logits[17] = 3.0;
        logits[400] = 3.0;
        logits[999] = 2.0;
        let greedy = params(0.0, 0, 1.0, 1.0, 0);
        assert_eq!(gpu_sample(sampler, &logits, &[], &greedy, 0), 17);
        // Penalty 2 halves both 3.0s (17 appears twice in the context: penalised once).
        let penalised = params(0.0, 0, 1.0, 2.0, 0);
        let context = [17, 400, 17, 5];
        assert_eq!(gpu_sample(sampler, &logits, &context, &penalised, 0), sample(&logits, &context, &penalised, 0));
        assert_eq!(gpu_sample(sampler, &logits, &context, &penalised, 0), 999);
        // Across the first pass's chunks of 1024 ids: the lowest id of the largest value wins,
        // wherever the chunks' maxima lie.
        let mut logits = random(3000, 62);
        logits[2500] = 5.0;
        assert_eq!(gpu_sample(sampler, &logits, &[], &greedy, 0), 2500);
        logits[1500] = 5.0;
        assert_eq!(gpu_sample(sampler, &logits, &[], &greedy, 0), 1500);
        assert_eq!(gpu_sample(sampler, &[-1.0; 3000], &[], &greedy, 0), 0);
        assert_eq!(gpu_sample(sampler, &[f32::NEG_INFINITY; 2100], &[], &greedy, 0), 0);
    }

    #[test]
    fn seeded_sampling_matches_the_cpu_spec() {
        let samplers = both();
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
                    for (step, sampler) in (0..6).zip(samplers.iter().cycle()) {
                        let want = sample(&logits, &context, p, step);
                        let got = gpu_sample(sampler, &logits, &context, p, step);
                        let how = if sampler.candidates { "candidates" } else { "one workgroup" };
                        assert_eq!(got, want, "{how}: vocab {vocab} spread {spread} {p:?} step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn ties_are_ordered_by_id_for_top_k_and_the_draw() {
        let samplers = both();
        // Many equal logits: the top-k boundary and the draw both fall inside runs of ties, within
        // one chunk of the first pass and across several (3000 ids).
        for vocab in [300, 3000] {
            let logits: Vec<f32> = (0..vocab).map(|i| [1.0f32, 0.5, 0.5, -0.0, 0.0][i % 5]).collect();
            for p in [params(1.0, 70, 1.0, 1.0, 9), params(1.0, 0, 0.5, 1.0, 10), params(0.3, 3, 0.99, 1.0, 11)] {
                for (step, sampler) in (0..20).zip(samplers.iter().cycle()) {
                    assert_eq!(
                        gpu_sample(sampler, &logits, &[], &p, step),
                        sample(&logits, &[], &p, step),
                        "candidates {} vocab {vocab} {p:?} step {step}",
                        sampler.candidates
                    );
                }
            }
        }
    }
}
