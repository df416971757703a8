//! The WebGPU backend: weights, activations and the KV cache live on the device; a decoded token
//! is one command encoder and one queue submission (every layer's dispatches, the sampler, and
//! the copy of the sampled id), then a 4-byte read-back.
//!
//! The core is async so the same code runs in the browser without blocking its thread; natively
//! [`Backend`] blocks on it with pollster.

mod attention;
pub mod context;
mod copy;
mod decode;
mod decode_attention;
mod embed;
mod inspect;
mod intervene;
pub mod kv_cache;
mod layer_norm;
mod matmul;
mod params;
mod plan;
mod pnorm;
mod rope;
mod sampler;
mod scores;
mod subgroup_probe;
#[cfg(test)]
mod testing;
mod timer;
mod values;
pub mod weights;

use std::sync::Arc;

pub use crate::dtype::Dtype;
pub use context::GpuContext;
pub use copy::CopyProbe;
pub use kv_cache::KvDtype;
pub use plan::{DeviceMemory, GpuLoader};
pub use scores::MIN_WORKGROUPS;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::generation::check_ids;
#[cfg(not(target_arch = "wasm32"))]
use crate::generation::Backend;
use crate::intervene::Interventions;
use crate::model::{Model, Projection};
use crate::sampling::SamplingParams;
use context::{bytes_to_f32, read_back, u32_bytes, Dispatch, Encoder, ParamPages};
use inspect::{CapturePlan, Inspector, ThetaLayout};
use intervene::Stage;
use matmul::{Linear, LinearArgs, LinearBinding};
use timer::Timer;
use weights::Matrix;

/// Tokens per forward chunk: longer prompts run in chunks of this many (the KV cache carries the
/// context over), which bounds the activation and logits buffers.
pub const PREFILL_CHUNK: usize = 128;

#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// How the parameter tokens are stored.
    pub dtype: Dtype,
    /// How the embedding (the tied head) is stored; default [`Dtype::default_embedding`].
    pub embedding: Option<Dtype>,
    /// How the KV cache holds keys and values; default [`KvDtype::default_for`] the weights.
    pub kv_cache: Option<KvDtype>,
    /// Largest weight buffer, in bytes; default the device's storage binding limit. Tests lower it
    /// to exercise the chunked path on small models.
    pub max_chunk_bytes: Option<u64>,
    /// Positions the KV cache holds (default: the model's `max_position_embeddings`); a shorter
    /// context takes less device memory.
    pub context: Option<usize>,
    /// Device bytes the model may take at most: a model whose plan needs more is refused before
    /// any weights are read (WebGPU cannot tell how much memory a device has).
    pub memory_budget: Option<u64>,
    /// Workgroups each decode product launches at least (where it has the rows): default
    /// [`MIN_WORKGROUPS`] on a GPU, 1 on a CPU adapter such as lavapipe, which runs them in turn.
    pub min_workgroups: Option<usize>,
    /// Kernels shaped for a GPU (default on a GPU) or for a CPU adapter such as lavapipe, which
    /// runs workgroups one after another and pays for every barrier (default there): prefill
    /// products tiled in workgroup memory or blocked in registers; top-k sampling from candidates
    /// sorted in many workgroups, or walked over the whole vocabulary in one.
    pub gpu_shapes: Option<bool>,
    /// Sums across a decode product's threads through subgroup shuffles (default where the adapter
    /// has subgroups: natively, not in browsers) or through workgroup memory alone (false); true
    /// on an adapter without them is an error.
    pub subgroups: Option<bool>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            dtype: Dtype::F32,
            embedding: None,
            kv_cache: None,
            max_chunk_bytes: None,
            context: None,
            memory_budget: None,
            min_workgroups: None,
            gpu_shapes: None,
            subgroups: None,
        }
    }
}

/// Work recorded for the last submitted forward pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    pub dispatches: u32,
    pub submissions: u32,
    /// Dispatches of one block (every block records the same).
    pub per_block: u32,
    /// Per kind of dispatch, in the order first recorded.
    pub kinds: Vec<DispatchKind>,
}

/// The dispatches of one kind in a pass and the workgroups they launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchKind {
    pub name: &'static str,
    pub dispatches: u32,
    pub min_workgroups: u32,
    pub max_workgroups: u32,
    /// Weight bytes its dispatches read (products; 0 for the rest).
    pub weight_bytes: u64,
    /// Its dispatches' time on the device, when the pass was timed.
    pub gpu_ns: Option<u64>,
}

impl PassStats {
    /// The statistics of `recorded`, with the device's times of its dispatches where measured.
    fn of(recorded: &[Dispatch], per_block: u32, times: Option<&[u64]>) -> PassStats {
        let mut kinds: Vec<DispatchKind> = Vec::new();
        for (i, d) in recorded.iter().enumerate() {
            let ns = times.map(|t| t.get(i).copied().unwrap_or(0));
            let groups = d.workgroups;
            match kinds.iter_mut().find(|k| k.name == d.kind) {
                Some(k) => {
                    k.dispatches += 1;
                    k.min_workgroups = k.min_workgroups.min(groups);
                    k.max_workgroups = k.max_workgroups.max(groups);
                    k.weight_bytes += d.weight_bytes;
                    k.gpu_ns = k.gpu_ns.zip(ns).map(|(a, b)| a + b);
                }
                None => kinds.push(DispatchKind {
                    name: d.kind,
                    dispatches: 1,
                    min_workgroups: groups,
                    max_workgroups: groups,
                    weight_bytes: d.weight_bytes,
                    gpu_ns: ns,
                }),
            }
        }
        PassStats { dispatches: recorded.len() as u32, submissions: 1, per_block, kinds }
    }
}

/// The general path's pipelines (prefill, the head over many rows, the sampler).
struct Kernels {
    embed: embed::Embed,
    norm: layer_norm::LayerNorm,
    linear: Linear,
    /// The head's products, when the embedding is stored in another dtype than the parameter tokens.
    head: Option<Linear>,
    pnorm: pnorm::PNorm,
    rope: rope::Rope,
    attention: attention::Attention,
    sampler: sampler::Sampler,
    intervene: intervene::Intervene,
}

impl Kernels {
    /// `dtype`: the parameter tokens'; `embedding`: the embedding's; `kv`: the KV cache's.
    fn new(
        c: &GpuContext,
        cfg: &ModelConfig,
        dtype: Dtype,
        embedding: Dtype,
        kv: KvDtype,
        gpu_shapes: bool,
    ) -> Kernels {
        Kernels {
            embed: embed::Embed::new(c, embedding),
            norm: layer_norm::LayerNorm::new(c, cfg.layernorm_eps),
            linear: Linear::new(c, dtype, gpu_shapes),
            head: (embedding != dtype).then(|| Linear::new(c, embedding, gpu_shapes)),
            pnorm: pnorm::PNorm::new(c),
            rope: rope::Rope::new(c, kv),
            attention: attention::Attention::new(c, cfg.head_dim(), gpu_shapes, kv),
            sampler: sampler::Sampler::new(c, gpu_shapes),
            intervene: intervene::Intervene::new(c),
        }
    }

    /// The products of the embedding's dtype.
    fn head(&self) -> &Linear {
        self.head.as_ref().unwrap_or(&self.linear)
    }
}

/// One block's weights. q, k, v keys are stacked into one matrix (one product for all three);
/// values are stored transposed, [d × n], so Theta · V is the same row-dot product as S = X · Kᵀ.
struct LayerWeights {
    qkv_keys: Matrix,
    qkv_values: Matrix,
    proj_keys: Matrix,
    proj_values: Matrix,
    ffn_keys: Matrix,
    ffn_values: Matrix,
}

impl LayerWeights {
    fn matrices(&self) -> [&Matrix; 6] {
        [&self.qkv_keys, &self.qkv_values, &self.proj_keys, &self.proj_values, &self.ffn_keys, &self.ffn_values]
    }
}

/// Device buffers for up to PREFILL_CHUNK tokens (the per-layer KV caches live in their bind groups).
struct Buffers {
    ids: wgpu::Buffer,
    /// The residual stream [T × d].
    x: wgpu::Buffer,
    /// Layer-norm output [T × d].
    a: wgpu::Buffer,
    /// Scores, then Theta, of the current Pattention [T × 3·qkv_slots or more].
    scores: wgpu::Buffer,
    qkv: wgpu::Buffer,
    q: wgpu::Buffer,
    o: wgpu::Buffer,
    /// Final-norm output of the rows that get logits.
    h: wgpu::Buffer,
    logits: wgpu::Buffer,
    logits_read: wgpu::Buffer,
    token: wgpu::Buffer,
    /// Two read-back slots for the sampled id: a step submitted ahead copies to the other one.
    token_read: [wgpu::Buffer; 2],
}

/// A decode step submitted before its input id was read back: it embeds the id the sampler left
/// in the ids buffer. It holds position `len - 1` until the next request confirms it.
struct Ahead {
    /// The id it was fed: the one the previous request returned.
    after: u32,
    /// With a repetition penalty, the context it was sampled with: the previous one and `after`.
    context: Vec<u32>,
    step: u32,
    params: SamplingParams,
    slot: usize,
    submission: wgpu::SubmissionIndex,
}

impl Ahead {
    /// Whether its sampler penalised the ids of `context` (any context without a penalty).
    fn penalises(&self, context: &[u32]) -> bool {
        self.params.repetition_penalty == 1.0 || context == self.context
    }
}

struct LayerBinds {
    /// Post-RoPE keys of every position so far (the inspector recomputes attention from it).
    k_cache: wgpu::Buffer,
    qkv_scores: LinearBinding,
    qkv_values: LinearBinding,
    rope: wgpu::BindGroup,
    attention: wgpu::BindGroup,
    proj_scores: LinearBinding,
    proj_values: LinearBinding,
    ffn_scores: LinearBinding,
    ffn_values: LinearBinding,
}

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    cfg: ModelConfig,
    vocab: usize,
    dtype: Dtype,
    kv: KvDtype,
    kernels: Kernels,
    buffers: Buffers,
    embed: embed::EmbedBinding,
    norm: wgpu::BindGroup,
    final_norm: wgpu::BindGroup,
    pnorm: wgpu::BindGroup,
    layers: Vec<LayerBinds>,
    head: LinearBinding,
    /// The one-token path, when the model fits its kernels.
    decode: Option<decode::Decode>,
    sampler: sampler::SamplerBinding,
    params: ParamPages,
    len: usize,
    /// The last pass's dispatches as recorded (kind, workgroups) and its dispatches per block; the
    /// statistics are made from them only when asked for, not on every token.
    last: (Vec<Dispatch>, u32),
    /// CPU time recording the last pass (natively; the browser has no clock here).
    encode_ns: u64,
    /// The decode step in flight ahead of the caller, if any.
    ahead: Option<Ahead>,
    weight_bytes: u64,
    /// Which kernel shapes the adapter got, in words (see [`GpuOptions`]).
    kernel_shapes: String,
    /// Built on the first inspection: ordinary generation never compiles its kernels.
    inspector: Option<Inspector>,
    /// Set while [`GpuBackend::profile_decode_step`] records: the pass's dispatches are timed.
    timer: Option<Timer>,
}

impl GpuBackend {
    /// Uploads `model` to the device of `ctx`. The model may be dropped afterwards: nothing on the
    /// host refers to it. Running out of device memory is an error, not a panic.
    pub async fn new(ctx: Arc<GpuContext>, model: &Model, options: &GpuOptions) -> Result<GpuBackend> {
        Self::load(ctx, model.config.clone(), model.vocab_size, options, |sink| model.feed(sink)).await
    }

    /// Uploads a model straight from its weights file (either format, read front to back as a
    /// stream): the host holds one value tensor at most, never the whole model.
    pub async fn from_file(
        ctx: Arc<GpuContext>,
        config: ModelConfig,
        vocab: usize,
        file: &[u8],
        options: &GpuOptions,
    ) -> Result<GpuBackend> {
        Self::load(ctx, config, vocab, options, |sink| crate::weights::stream::stream_file(file, sink)).await
    }

    /// Opens the default adapter and uploads `model`.
    pub async fn open(model: &Model, options: &GpuOptions) -> Result<GpuBackend> {
        GpuBackend::new(GpuContext::new().await?, model, options).await
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// How the KV cache holds keys and values.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv
    }

    /// The kernel shapes chosen for the adapter (or by [`GpuOptions`]), in words.
    pub fn kernel_shapes(&self) -> &str {
        &self.kernel_shapes
    }

    /// Dispatches and submissions of the last forward pass (a decoded token when it was one token).
    pub fn last_pass(&self) -> PassStats {
        PassStats::of(&self.last.0, self.last.1, None)
    }

    /// CPU time recording the last pass's commands, in nanoseconds (0 in the browser).
    pub fn last_encode_ns(&self) -> u64 {
        self.encode_ns
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Applies `set` to every forward pass from now on (an empty set removes them; see
    /// [`crate::intervene`]). The KV cache, computed under the previous set, is emptied, and a
    /// decode step submitted ahead under it is dropped. While a set is active, tokens take the
    /// general path, whose normalisations the set's columns are scaled after.
    pub fn set_interventions(&mut self, set: Interventions) {
        self.reset();
        let (ctx, scores) = (&self.ctx, &self.buffers.scores);
        self.kernels.intervene.apply(ctx, set, &self.cfg, scores);
    }

    pub fn interventions(&self) -> &Interventions {
        self.kernels.intervene.set()
    }

    /// Empties the KV cache: positions past `len` are overwritten before attention reads them.
    pub fn reset(&mut self) {
        self.len = 0;
        self.ahead = None;
    }

    /// Runs one decode step with every dispatch timed by the device and returns its statistics,
    /// times included: the step takes the id the last one left on the device and samples with
    /// `params` less the repetition penalty (so the penalised ids stay as they were); the KV cache
    /// is as before (a step decoding ahead is discarded). For `bench`; an error where the adapter
    /// has no timestamp queries.
    pub async fn profile_decode_step(&mut self, params: &SamplingParams) -> Result<PassStats> {
        self.discard_ahead();
        check_ids(&[0], self.vocab, self.len, self.cfg.max_positions)?;
        let params = SamplingParams { repetition_penalty: 1.0, ..*params };
        self.timed(|s| {
            s.submit_sampled(None, &params, 0, 0);
            s.len -= 1;
        })
        .await
    }

    /// Runs `ids` (at most [`PREFILL_CHUNK`]) at the next positions as one prefill submission with
    /// every dispatch timed by the device, the last token's logits included, and returns its
    /// statistics; the KV cache is as before (the ids buffer is not: a decode step profiled next
    /// starts from `ids[0]`). For `bench`, like [`GpuBackend::profile_decode_step`].
    pub async fn profile_prefill(&mut self, ids: &[u32]) -> Result<PassStats> {
        if ids.len() > PREFILL_CHUNK {
            return Err(Error::Usage(format!("a timed prefill takes at most {PREFILL_CHUNK} tokens")));
        }
        self.discard_ahead();
        check_ids(ids, self.vocab, self.len, self.cfg.max_positions)?;
        self.timed(|s| {
            s.submit_chunk(Some(ids), 1, None, |_, _| {});
            s.len -= ids.len();
        })
        .await
    }

    /// Records and submits what `submit` does with the device timing each dispatch.
    async fn timed(&mut self, submit: impl FnOnce(&mut Self)) -> Result<PassStats> {
        self.ctx.check_alive()?;
        let no_timer =
            || Error::Gpu(format!("{} cannot time dispatches (no timestamp-query)", self.ctx.adapter_name()));
        self.timer = Some(Timer::new(&self.ctx).ok_or_else(no_timer)?);
        submit(self);
        let timer = self.timer.take();
        let (recorded, per_block) = &self.last;
        let times = match timer {
            Some(timer) => timer.read(&self.ctx, recorded.len()).await?,
            None => Vec::new(),
        };
        Ok(PassStats::of(recorded, *per_block, Some(&times)))
    }

    /// Forgets a step submitted ahead that the caller did not ask for: its position is free again
    /// (its cache entry is overwritten before anything reads it).
    fn discard_ahead(&mut self) {
        if self.ahead.take().is_some() {
            self.len -= 1;
        }
    }

    /// Whether a decode step is in flight ahead of the caller (see [`GpuBackend::next_token_async`]).
    pub fn decoding_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// Weight bytes one decoded token reads in the device format.
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weight_bytes
    }

    /// Records the forward pass of `t` tokens (already in the ids buffer) at the next positions,
    /// ending with the final norm and head for the last `rows` of them (none: only the KV cache).
    /// `plan`, when given, records Theta maps and attention probabilities along the way. Returns
    /// the dispatches of one block.
    fn encode_forward(&self, enc: &mut Encoder, t: usize, rows: usize, plan: Option<&CapturePlan>) -> u32 {
        let cfg = &self.cfg;
        let k = &self.kernels;
        if let (1, None, Some(decode), false) = (t, plan, &self.decode, k.intervene.active()) {
            return decode.encode(enc, &k.embed, cfg, self.len, rows > 0);
        }
        let mut per_block = 0;
        let (d, start, f) = (cfg.hidden_size, self.len, cfg.norm_activation);
        let (nq, np, nf) = (cfg.qkv_slots, cfg.proj_slots, cfg.ffn_slots);
        let scores = &self.buffers.scores;
        k.embed.encode(enc, &self.embed, t);
        for (l, layer) in self.layers.iter().enumerate() {
            let before = enc.recorded.len();
            k.norm.encode(enc, &self.norm, t, 0, d, false);
            k.linear.encode(enc, &layer.qkv_scores, &LinearArgs::plain(t, d, 3 * nq));
            k.pnorm.encode(enc, &self.pnorm, 3 * t, nq, f);
            k.intervene.encode(enc, l, Stage::Qkv, t, 3 * nq);
            if let Some(plan) = plan {
                for (g, proj) in [Projection::Query, Projection::Key, Projection::Value].into_iter().enumerate() {
                    let at = ThetaLayout { n: nq, lda: 3 * nq, offset: g * nq };
                    plan.theta(enc, scores, l, proj, &at, t, start);
                }
            }
            k.linear.encode(enc, &layer.qkv_values, &LinearArgs::stacked_values(t, nq, d));
            k.rope.encode(enc, &layer.rope, t, start, d, cfg.head_dim(), cfg.rotary_dims() / 2);
            k.attention.encode(enc, &layer.attention, t, start, cfg.num_heads, d);
            k.linear.encode(enc, &layer.proj_scores, &LinearArgs::plain(t, d, np));
            k.pnorm.encode(enc, &self.pnorm, t, np, f);
            k.intervene.encode(enc, l, Stage::Proj, t, np);
            if let Some(plan) = plan {
                plan.attention(enc, l, t, start, cfg.num_heads, d, cfg.head_dim());
                plan.theta(enc, scores, l, Projection::Proj, &ThetaLayout { n: np, lda: np, offset: 0 }, t, start);
            }
            let residual = |n| LinearArgs { accumulate: true, ..LinearArgs::plain(t, n, d) };
            k.linear.encode(enc, &layer.proj_values, &residual(np));
            k.norm.encode(enc, &self.norm, t, 0, d, false);
            k.linear.encode(enc, &layer.ffn_scores, &LinearArgs::plain(t, d, nf));
            k.pnorm.encode(enc, &self.pnorm, t, nf, f);
            k.intervene.encode(enc, l, Stage::Ffn, t, nf);
            if let Some(plan) = plan {
                plan.theta(enc, scores, l, Projection::Ffn, &ThetaLayout { n: nf, lda: nf, offset: 0 }, t, start);
            }
            k.linear.encode(enc, &layer.ffn_values, &residual(nf));
            per_block = (enc.recorded.len() - before) as u32;
            if let Some(plan) = plan.filter(|p| p.lens.is_some()) {
                k.norm.encode(enc, &self.final_norm, t, 0, d, true);
                k.linear.encode(enc, &self.head, &LinearArgs::plain(t, d, self.vocab));
                plan.lens(enc, l, t, start, self.vocab);
            }
        }
        if rows > 0 {
            k.norm.encode(enc, &self.final_norm, rows, t - rows, d, true);
            k.head().encode(enc, &self.head, &LinearArgs::plain(rows, d, self.vocab));
        }
        per_block
    }

    /// Runs `ids` at the next positions (see [`Backend::forward`]).
    pub async fn forward_async(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        self.discard_ahead();
        check_ids(ids, self.vocab, self.len, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let mut out = Vec::with_capacity(if all_logits { ids.len() } else { 1 } * self.vocab);
        let chunks = ids.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let read = all_logits || i + 1 == chunks;
            let rows = if all_logits { chunk.len() } else { read as usize };
            let bytes = (rows * self.vocab * 4) as u64;
            self.submit_chunk(Some(chunk), rows, None, |enc, s| {
                if read {
                    enc.copy(&s.buffers.logits, 0, &s.buffers.logits_read, bytes);
                }
            });
            if read {
                out.extend(bytes_to_f32(&read_back(&self.ctx, &self.buffers.logits_read, bytes, None).await?));
            }
        }
        Ok(out)
    }

    /// Feeds `ids` and samples the next token on the device (see [`Backend::next_token`]): only
    /// the token id comes back. Decoding is pipelined: once a token is sampled the next step is
    /// submitted at once, fed by the sampled id on the device, before that id is read back; the
    /// next call (fed that id, the next step, the same parameters, the context grown by that id)
    /// only reads its result, having already submitted the one after. A different call discards
    /// the step.
    pub async fn next_token_async(
        &mut self,
        ids: &[u32],
        context: &[u32],
        params: &SamplingParams,
        step: u32,
    ) -> Result<u32> {
        match self.ahead.take() {
            Some(a) if ids == [a.after] && step == a.step && *params == a.params && a.penalises(context) => {
                self.ctx.check_alive()?;
                return self.read_and_submit_ahead(a.slot, a.submission, context, params, step).await;
            }
            // Not the call it anticipated: its position is free again.
            Some(_) => self.len -= 1,
            None => {}
        }
        check_ids(ids, self.vocab, self.len, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let (head, tail) = ids.split_at(ids.len() - 1 - (ids.len() - 1) % PREFILL_CHUNK);
        for chunk in head.chunks(PREFILL_CHUNK) {
            self.submit_chunk(Some(chunk), 0, None, |_, _| {});
        }
        if params.repetition_penalty != 1.0 {
            self.sampler.write_penalised(&self.ctx, context);
        }
        let submission = self.submit_sampled(Some(tail), params, step, 0);
        self.read_and_submit_ahead(0, submission, context, params, step).await
    }

    /// Submits the step after `step` (unless the generation cannot go on) and reads the id sampled
    /// in `slot` by `submission`, the step's context being `context`.
    async fn read_and_submit_ahead(
        &mut self,
        slot: usize,
        submission: wgpu::SubmissionIndex,
        context: &[u32],
        params: &SamplingParams,
        step: u32,
    ) -> Result<u32> {
        let next = step + 1;
        let go_on = (next as usize) < params.max_tokens && self.len < self.cfg.max_positions;
        let ahead = go_on.then(|| (1 - slot, self.submit_sampled(None, params, next, 1 - slot)));
        let bytes = read_back(&self.ctx, &self.buffers.token_read[slot], 4, Some(submission)).await?;
        let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        self.ahead = ahead.map(|(slot, submission)| {
            let penalty = params.repetition_penalty != 1.0;
            let context = if penalty { [context, &[id]].concat() } else { Vec::new() };
            Ahead { after: id, context, step: next, params: params.clone(), slot, submission }
        });
        Ok(id)
    }

    /// Submits `ids` (None: the one id the last sampler left on the device) with the sampler, whose
    /// id goes to read-back `slot` and to the ids buffer, ready to feed the step after.
    fn submit_sampled(
        &mut self,
        ids: Option<&[u32]>,
        params: &SamplingParams,
        step: u32,
        slot: usize,
    ) -> wgpu::SubmissionIndex {
        self.submit_chunk(ids, 1, None, |enc, s| {
            s.kernels.sampler.encode(enc, &s.sampler, params, step);
            enc.copy(&s.buffers.token, 0, &s.buffers.token_read[slot], 4);
            enc.copy(&s.buffers.token, 0, &s.buffers.ids, 4);
        })
    }

    /// Encodes and submits one chunk of at most PREFILL_CHUNK tokens (None: the one id already in
    /// the ids buffer), with logits for its last `rows`; `finish` appends work (sampling, read-back
    /// copies) to the same submission.
    fn submit_chunk(
        &mut self,
        ids: Option<&[u32]>,
        rows: usize,
        plan: Option<&CapturePlan>,
        finish: impl FnOnce(&mut Encoder, &GpuBackend),
    ) -> wgpu::SubmissionIndex {
        #[cfg(not(target_arch = "wasm32"))]
        let clock = std::time::Instant::now();
        if let Some(ids) = ids {
            self.ctx.queue.write_buffer(&self.buffers.ids, 0, &u32_bytes(ids));
        }
        let t = ids.map_or(1, <[u32]>::len);
        let mut pages = std::mem::take(&mut self.params);
        let timer = self.timer.take();
        let mut enc = match &timer {
            Some(timer) => Encoder::timed(&self.ctx, &mut pages, timer),
            None => Encoder::new(&self.ctx, &mut pages),
        };
        let per_block = self.encode_forward(&mut enc, t, rows, plan);
        finish(&mut enc, self);
        self.last = (std::mem::take(&mut enc.recorded), per_block);
        // Recording only: a software Vulkan queue may block in submit until the GPU is free.
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.encode_ns = clock.elapsed().as_nanos() as u64;
        }
        let submission = enc.submit();
        self.params = pages;
        self.timer = timer;
        self.len += t;
        submission
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Backend for GpuBackend {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        GpuBackend::max_positions(self)
    }

    fn position(&self) -> usize {
        // A step submitted ahead is not the caller's until it asks for it.
        self.len - self.ahead.is_some() as usize
    }

    fn reset(&mut self) {
        GpuBackend::reset(self)
    }

    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_async(ids, all_logits))
    }

    fn next_token(&mut self, ids: &[u32], context: &[u32], params: &SamplingParams, step: u32) -> Result<u32> {
        pollster::block_on(self.next_token_async(ids, context, params, step))
    }
}
