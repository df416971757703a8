//! The next token, chosen on the device: repetition penalty, argmax, and the full seeded sampler
//! of `crate::sampling` (top-k, temperature, top-p, pcg_hash draw). A first pass over many
//! workgroups (one per chunk of the vocabulary) applies the penalty, finds each chunk's maximum and,
//! for top-k sampling, each chunk's top k; one workgroup then finishes over those candidates.
//! Without such a list (top-k 0 or ≥ [`CHUNK`]) a GPU walks the whole vocabulary over many
//! workgroups too (`sampler_walk.wgsl`, a few dozen small dispatches). A CPU adapter, where the
//! chunks' sorts and the walk's dispatches cost more (in barriers) than they save, runs the first
//! pass in one workgroup and the second over the whole vocabulary.

use super::context::{u32_bytes, Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use crate::sampling::SamplingParams;

shader_params!(SamplerParams for "lib/sampling.wgsl" {
    vocab: u32, temperature: f32, top_k: u32, top_p: f32, penalty: f32, seed: u32, step: u32, chunk: u32, chunks: u32,
    per_chunk: u32, stage: u32, walk: u32, pass_index: u32,
});

/// Ids per workgroup of the first pass (CHUNK in the shaders).
const CHUNK: usize = 1024;
/// Bins of one digit of a walk (8 bits a pass), per chunk.
const BINS: u64 = 256;
/// Digit passes over the 32-bit order key (KEY_PASSES in the shader).
const KEY_PASSES: u32 = 4;

/// `p.stage` and `p.walk` of `sampler_walk.wgsl`.
const STAGE_START: u32 = 0;
const STAGE_MASS: u32 = 1;
const STAGE_TOTAL: u32 = 2;
const STAGE_BINS: u32 = 3;
const STAGE_PICK: u32 = 4;
const WALK_TOP_K: u32 = 0;
const WALK_TOP_P: u32 = 1;
const WALK_DRAW: u32 = 2;

pub(crate) struct Sampler {
    chunks: Kernel,
    merge: Kernel,
    /// The walks over many workgroups, with top-k candidates from chunks: GPUs only (a CPU
    /// adapter never runs them, and SwiftShader takes seconds to compile them).
    walk: Option<Kernel>,
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
            &[Access::ReadWrite; 8],
        );
        let merge = chunks.sibling(ctx, "sampler", &source(include_str!("../../shaders/sampler.wgsl")));
        let walk = candidates
            .then(|| chunks.sibling(ctx, "sampler walk", &source(include_str!("../../shaders/sampler_walk.wgsl"))));
        Sampler { chunks, merge, walk }
    }

    /// Whether top-k candidates come from chunks and walks run over many workgroups (GPUs).
    fn candidates(&self) -> bool {
        self.walk.is_some()
    }

    /// Binds the first `vocab` logits (modified in place by the penalty) and the one-word output.
    pub fn bind(&self, ctx: &GpuContext, logits: &wgpu::Buffer, vocab: usize, token: &wgpu::Buffer) -> SamplerBinding {
        let chunks = vocab.div_ceil(CHUNK) as u64;
        let penalised = ctx.storage("penalised ids", vocab.div_ceil(32) as u64 * 4);
        let probs = ctx.storage("probabilities", vocab as u64 * 4);
        let candidates = ctx.storage("sampler candidates", chunks * CHUNK as u64 * 4);
        let chunk_max = ctx.storage("chunk maxima", chunks * 8);
        let walk = ctx.storage("sampler walk", 64);
        let partials = ctx.storage("sampler walk bins", chunks * BINS * 8);
        let bind =
            self.chunks.bind(ctx, &[logits, &penalised, &probs, token, &candidates, &chunk_max, &walk, &partials]);
        SamplerBinding { bind, penalised, vocab }
    }

    /// Samples from the logits; the penalised ids are those last written by
    /// [`SamplerBinding::write_penalised`] and picked since.
    pub fn encode(&self, enc: &mut Encoder, b: &SamplerBinding, params: &SamplingParams, step: u32) {
        let chunk = if self.candidates() { CHUNK } else { b.vocab };
        let chunks = b.vocab.div_ceil(chunk);
        // Each chunk's top k hold the global top k; past a chunk's size every id is a candidate.
        let sorts = self.candidates() && params.temperature > 0.0 && params.top_k < b.vocab.min(CHUNK);
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
            stage: 0,
            walk: 0,
            pass_index: 0,
        };
        enc.dispatch(&self.chunks, &b.bind, &words, [chunks as u32, 1, 1]);
        let walker = match &self.walk {
            Some(walker) if params.temperature > 0.0 && per_chunk == 0 => walker,
            _ => {
                enc.dispatch(&self.merge, &b.bind, &words, [1, 1, 1]);
                return;
            }
        };
        let stage = |enc: &mut Encoder, stage: u32, walk: u32, pass_index: u32, groups: usize| {
            let words = SamplerParams { stage, walk, pass_index, ..words };
            enc.dispatch(walker, &b.bind, &words, [groups as u32, 1, 1]);
        };
        let id_bits = u32::BITS - (b.vocab.saturating_sub(1).max(1) as u32).leading_zeros();
        let walk = |enc: &mut Encoder, walk: u32| {
            for pass_index in 0..KEY_PASSES + id_bits.div_ceil(8) {
                stage(enc, STAGE_BINS, walk, pass_index, chunks);
                stage(enc, STAGE_PICK, walk, pass_index, 1);
            }
        };
        let top_p = params.top_p < 1.0;
        stage(enc, STAGE_START, 0, 0, 1);
        if params.top_k > 0 && params.top_k < b.vocab {
            walk(enc, WALK_TOP_K);
        }
        stage(enc, STAGE_MASS, 0, 0, chunks);
        stage(enc, STAGE_TOTAL, if top_p { WALK_TOP_P } else { WALK_DRAW }, 0, 1);
        if top_p {
            walk(enc, WALK_TOP_P);
            stage(enc, STAGE_MASS, 0, 0, chunks);
            stage(enc, STAGE_TOTAL, WALK_DRAW, 0, 1);
        }
        walk(enc, WALK_DRAW);
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
        sample_and_penalised(sampler, logits, context, params, step).0
    }

    /// The sampler's pick, and the penalised-id bits it leaves for the next step.
    fn sample_and_penalised(
        sampler: &Sampler,
        logits: &[f32],
        context: &[u32],
        params: &SamplingParams,
        step: u32,
    ) -> (u32, Vec<u32>) {
        let ctx = test_context();
        let logits_buf = ctx.storage_init("logits", &f32_bytes(logits));
        let token = ctx.storage("token", 4);
        let words = logits.len().div_ceil(32) as u64;
        let read = ctx.buffer("read", 4 + words * 4, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let binding = sampler.bind(&ctx, &logits_buf, logits.len(), &token);
        binding.write_penalised(&ctx, context);
        let mut pages = ParamPages::default();
        let mut enc = Encoder::new(&ctx, &mut pages);
        sampler.encode(&mut enc, &binding, params, step);
        // Sampling with no top-k list walks over many workgroups on a GPU.
        let walks =
            sampler.candidates() && params.temperature > 0.0 && !(1..CHUNK.min(logits.len())).contains(&params.top_k);
        let walked = enc.recorded.iter().filter(|d| d.kind == "sampler walk").count();
        let merged = enc.recorded.iter().filter(|d| d.kind == "sampler").count();
        assert_eq!((walked > 0, merged), (walks, usize::from(!walks)), "{params:?}");
        enc.copy(&token, 0, &read, 4);
        enc.copy_at(&binding.penalised, 0, &read, 4, words * 4);
        enc.submit();
        let bytes = pollster::block_on(read_back(&ctx, &read, 4 + words * 4, None)).unwrap();
        let words: Vec<u32> = bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        (words[0], words[1..].to_vec())
    }

    /// The sampler as GPUs run it (top-k candidates or walks over many workgroups) and as CPU
    /// adapters do.
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
        // The penalty lowers id 0 below another id: the first pass must compare id 0's penalised
        // value, not the one it read before the penalty.
        let mut logits = random(3000, 63);
        logits[0] = 5.0;
        logits[1] = 3.0;
        assert_eq!(gpu_sample(sampler, &logits, &[0], &penalised, 0), 1);
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
                        let how = if sampler.candidates() { "many workgroups" } else { "one workgroup" };
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
                        sampler.candidates()
                    );
                }
            }
        }
    }

    #[test]
    fn the_pick_joins_the_penalised_ids_for_a_step_decoded_ahead() {
        let logits: Vec<f32> = random(3000, 90).iter().map(|v| v * 4.0).collect();
        let context = [3u32, 64, 2999];
        // Greedy, top-k candidates, and a walk over the whole vocabulary; with a penalty, and without
        // one (then nothing is marked). Then an infinite logit: nothing to sample, the argmax is the
        // pick (on a GPU written by the walk's first stage, and marked there).
        let mut infinite = logits.clone();
        infinite[1234] = f32::INFINITY;
        let cases =
            [(0.0, 0, &logits), (0.9, 40, &logits), (0.9, 0, &logits), (0.9, 0, &infinite), (0.9, 40, &infinite)];
        for (seed, (temperature, top_k, logits)) in cases.into_iter().enumerate() {
            let p = params(temperature, top_k, 0.9, 1.3, seed as u32);
            for sampler in both() {
                for penalty in [p.repetition_penalty, 1.0] {
                    let p = SamplingParams { repetition_penalty: penalty, ..p };
                    let (pick, bits) = sample_and_penalised(&sampler, logits, &context, &p, 0);
                    assert_eq!(pick, sample(logits, &context, &p, 0), "candidates {} {p:?}", sampler.candidates());
                    let marked: Vec<u32> =
                        (0..3000).filter(|&i| bits[i as usize / 32] & (1 << (i % 32)) != 0).collect();
                    let mut want = context.to_vec();
                    if penalty != 1.0 && !want.contains(&pick) {
                        want.push(pick);
                        want.sort();
                    }
                    assert_eq!(marked, want, "candidates {} {p:?}", sampler.candidates());
                }
            }
        }
    }

    #[test]
    fn long_runs_of_ties_and_non_finite_logits_match_the_cpu_spec() {
        let samplers = both();
        let vocab = 50_277;
        // Every cut and draw inside one run of 50,277 ties, then inside a run of 50,276 ties
        // weighing e^-1 each after one larger logit (added one by one in f32, ties drift from the
        // CPU's f64 sum by several ids).
        let flat = vec![0.0f32; vocab];
        let mut one_high = flat.clone();
        one_high[0] = 1.0;
        // Nothing to sample: every logit -inf, or an infinite one (the argmax is the pick).
        let mut infinite = random(vocab, 95);
        infinite[777] = f32::INFINITY;
        let none = vec![f32::NEG_INFINITY; 2100];
        for (name, logits) in [("flat", &flat), ("one high", &one_high), ("+inf", &infinite), ("-inf", &none)] {
            for p in [params(1.0, 0, 1.0, 1.0, 9), params(1.0, 0, 0.5, 1.0, 10), params(1.0, 30_000, 1.0, 1.0, 11)] {
                for step in 0..6 {
                    for sampler in &samplers {
                        assert_eq!(
                            gpu_sample(sampler, logits, &[], &p, step),
                            sample(logits, &[], &p, step),
                            "{name}: candidates {} {p:?} step {step}",
                            sampler.candidates()
                        );
                    }
                }
            }
        }
    }
}
