//! The WebGPU backend: weights, activations and the KV cache live on the device; a decoded token
//! is one command encoder and one queue submission (every layer's dispatches, the sampler, and
//! the copy of the sampled id), then a 4-byte read-back.
//!
//! The core is async so the same code runs in the browser without blocking its thread; natively
//! [`Backend`] blocks on it with pollster.

mod attention;
pub mod context;
mod copy;
mod embed;
mod inspect;
mod layer_norm;
mod matmul;
mod pnorm;
mod rope;
mod sampler;
#[cfg(test)]
mod testing;
pub mod weights;

use std::borrow::Cow;
use std::sync::Arc;

pub use context::GpuContext;
pub use copy::CopyProbe;
pub use weights::WeightDtype;

use crate::config::ModelConfig;
use crate::cpu::kernels::rope_inv_freq;
use crate::error::{Error, Result};
use crate::generation::check_ids;
#[cfg(not(target_arch = "wasm32"))]
use crate::generation::Backend;
use crate::inspect::{check_slot, AttentionCapture, Capture, InspectRequest, Inspection, ThetaSummary};
use crate::model::{Block, Model, ModelTensors, Projection};
use crate::sampling::SamplingParams;
use context::{bytes_to_f32, f32_bytes, read_back, read_storage, u32_bytes, Encoder, ParamPages};
use inspect::{CapturePlan, Inspector, MapCapture, MapSink, ThetaLayout};
use matmul::{Linear, LinearArgs, LinearBinding};
use weights::{upload, Matrix, Store};

/// Tokens per forward chunk: longer prompts run in chunks of this many (the KV cache carries the
/// context over), which bounds the activation and logits buffers.
pub const PREFILL_CHUNK: usize = 128;

#[derive(Debug, Clone)]
pub struct GpuOptions {
    pub dtype: WeightDtype,
    /// Largest weight buffer, in bytes; default the device's storage binding limit. Tests lower it
    /// to exercise the chunked path on small models.
    pub max_chunk_bytes: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { dtype: WeightDtype::F32, max_chunk_bytes: None }
    }
}

/// Work recorded for the last submitted forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    pub dispatches: u32,
    pub submissions: u32,
}

struct Kernels {
    embed: embed::Embed,
    norm: layer_norm::LayerNorm,
    linear: Linear,
    pnorm: pnorm::PNorm,
    rope: rope::Rope,
    attention: attention::Attention,
    sampler: sampler::Sampler,
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
    /// Distinct context ids for the repetition penalty, and the sampler's probabilities.
    context: wgpu::Buffer,
    probs: wgpu::Buffer,
    token: wgpu::Buffer,
    token_read: wgpu::Buffer,
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
    dtype: WeightDtype,
    kernels: Kernels,
    buffers: Buffers,
    embed: embed::EmbedBinding,
    norm: wgpu::BindGroup,
    final_norm: wgpu::BindGroup,
    pnorm: wgpu::BindGroup,
    layers: Vec<LayerBinds>,
    head: LinearBinding,
    sampler: wgpu::BindGroup,
    params: ParamPages,
    len: usize,
    last: PassStats,
    weight_bytes: u64,
    /// Built on the first inspection: ordinary generation never compiles its kernels.
    inspector: Option<Inspector>,
}

impl GpuBackend {
    /// Uploads `model` to the device of `ctx`. The model may be dropped afterwards: nothing on the
    /// host refers to it. Running out of device memory is an error, not a panic.
    pub async fn new(ctx: Arc<GpuContext>, model: &Model, options: &GpuOptions) -> Result<GpuBackend> {
        Self::upload(ctx, Weights::Model(model), options).await
    }

    /// Uploads a model straight from its file, one tensor at a time: the host holds one decoded
    /// tensor at once, never the whole model.
    pub async fn from_file(
        ctx: Arc<GpuContext>,
        tensors: ModelTensors<'_>,
        options: &GpuOptions,
    ) -> Result<GpuBackend> {
        Self::upload(ctx, Weights::File(tensors), options).await
    }

    async fn upload(ctx: Arc<GpuContext>, weights: Weights<'_>, options: &GpuOptions) -> Result<GpuBackend> {
        let needs = match &weights {
            Weights::Model(m) => DeviceMemory::of(&m.config, m.vocab_size, options.dtype),
            Weights::File(t) => DeviceMemory::of(t.config(), t.vocab_size(), options.dtype),
        };
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let backend = Self::build(ctx.clone(), weights, options);
        if let Some(e) = scope.pop().await {
            let hint = if options.dtype == WeightDtype::F32 { "; f16 weights (--dtype f16) take half" } else { "" };
            return Err(Error::Gpu(format!("the device ran out of memory ({e}): this model needs {needs}{hint}")));
        }
        backend
    }

    fn build(ctx: Arc<GpuContext>, mut weights: Weights<'_>, options: &GpuOptions) -> Result<GpuBackend> {
        let (cfg, vocab) = match &weights {
            Weights::Model(m) => (m.config.clone(), m.vocab_size),
            Weights::File(t) => (t.config().clone(), t.vocab_size()),
        };
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        if hd > attention::MAX_HEAD_DIM {
            return Err(Error::Gpu(format!(
                "head dim {hd} exceeds the attention kernel's {}",
                attention::MAX_HEAD_DIM
            )));
        }
        let t = PREFILL_CHUNK as u64;
        let widest = (3 * cfg.qkv_slots).max(cfg.proj_slots).max(cfg.ffn_slots) as u64;
        let (df, vf) = (d as u64 * 4, vocab as u64 * 4);
        let cache_bytes = cfg.max_positions as u64 * df;
        // Activations and caches are bound whole; weights are the only tensors split into chunks.
        for (what, bytes) in [("Pattention scores", t * widest * 4), ("logits", t * vf), ("KV cache", cache_bytes)] {
            if bytes > ctx.max_binding_bytes() {
                return Err(Error::Gpu(format!(
                    "the {what} buffer needs {bytes} bytes, more than the device binds ({})",
                    ctx.max_binding_bytes()
                )));
            }
        }
        let dtype = options.dtype;
        let store =
            Store { dtype, max_chunk_bytes: options.max_chunk_bytes.unwrap_or(u64::MAX).min(ctx.max_binding_bytes()) };
        let c = &*ctx;

        let embedding = weights.embedding()?;
        let embedding =
            upload(c, "embedding", vocab, d, 1, store, |r, out| out.copy_from_slice(&embedding[r * d..(r + 1) * d]))?;
        let mut layer_weights = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let block = weights.block(l)?;
            let keys = |label: &str, parts: &[&crate::model::Pattention]| {
                let n = parts[0].n;
                let parts: Vec<_> = parts.iter().map(|p| p.key_param_tokens.to_f32()).collect();
                upload(c, &format!("{label} keys {l}"), n * parts.len(), d, 1, store, |r, out| {
                    out.copy_from_slice(&parts[r / n][(r % n) * d..][..d])
                })
            };
            // Row c of Vᵀ is column c of V: the value of every parameter token for output dim c.
            let values = |label: &str, parts: &[&crate::model::Pattention]| {
                let n = parts[0].n;
                let parts: Vec<_> = parts.iter().map(|p| p.value_param_tokens.to_f32()).collect();
                upload(c, &format!("{label} values {l}"), d * parts.len(), n, parts.len(), store, |r, out| {
                    let v = &parts[r / d];
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = v[j * d + r % d];
                    }
                })
            };
            let qkv = [&block.query, &block.key, &block.value];
            layer_weights.push(LayerWeights {
                qkv_keys: keys("qkv", &qkv)?,
                qkv_values: values("qkv", &qkv)?,
                proj_keys: keys("proj", &[&block.proj])?,
                proj_values: values("proj", &[&block.proj])?,
                ffn_keys: keys("ffn", &[&block.ffn])?,
                ffn_values: values("ffn", &[&block.ffn])?,
            });
        }
        let weight_bytes = cfg.weight_bytes_per_token(vocab, dtype.bytes()) as u64;

        use wgpu::BufferUsages as U;
        let buffers = Buffers {
            ids: c.storage("ids", t * 4),
            x: c.storage("x", t * df),
            a: c.storage("a", t * df),
            scores: c.storage("scores", t * widest * 4),
            qkv: c.storage("qkv", t * 3 * df),
            q: c.storage("q", t * df),
            o: c.storage("o", t * df),
            h: c.storage("h", t * df),
            logits: c.storage("logits", t * vf),
            logits_read: c.buffer("logits read", t * vf, U::MAP_READ | U::COPY_DST),
            context: c.storage("context", cfg.max_positions as u64 * 4),
            probs: c.storage("probs", vf),
            token: c.storage("token", 4),
            token_read: c.buffer("token read", 4, U::MAP_READ | U::COPY_DST),
        };
        let table = rope::rope_table(cfg.max_positions, &rope_inv_freq(cfg.rotary_dims(), cfg.rotary_base));
        let rope_table = c.storage_init("rope", &f32_bytes(&table));
        let [final_w, final_b] = weights.final_norm()?;
        let final_w = c.storage_init("final norm weight", &f32_bytes(&final_w));
        let final_b = c.storage_init("final norm bias", &f32_bytes(&final_b));

        let kernels = Kernels {
            embed: embed::Embed::new(c, dtype),
            norm: layer_norm::LayerNorm::new(c, cfg.layernorm_eps),
            linear: Linear::new(c, dtype),
            pnorm: pnorm::PNorm::new(c),
            rope: rope::Rope::new(c),
            attention: attention::Attention::new(c),
            sampler: sampler::Sampler::new(c),
        };
        let b = &buffers;
        let k = &kernels;
        // Bind groups hold their buffers: the weights need no other owner.
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for w in &layer_weights {
            let (kc, vc) = (c.storage("k cache", cache_bytes), c.storage("v cache", cache_bytes));
            layers.push(LayerBinds {
                k_cache: kc.clone(),
                qkv_scores: k.linear.bind(c, &w.qkv_keys, &b.a, &b.scores),
                qkv_values: k.linear.bind(c, &w.qkv_values, &b.scores, &b.qkv),
                rope: k.rope.bind(c, &b.qkv, &rope_table, &b.q, &kc, &vc),
                attention: k.attention.bind(c, &b.q, &kc, &vc, &b.o),
                proj_scores: k.linear.bind(c, &w.proj_keys, &b.o, &b.scores),
                proj_values: k.linear.bind(c, &w.proj_values, &b.scores, &b.x),
                ffn_scores: k.linear.bind(c, &w.ffn_keys, &b.a, &b.scores),
                ffn_values: k.linear.bind(c, &w.ffn_values, &b.scores, &b.x),
            });
        }
        let backend = GpuBackend {
            embed: k.embed.bind(c, &b.ids, &embedding, &b.x),
            norm: k.norm.bind(c, &b.x, &final_w, &final_b, &b.a),
            final_norm: k.norm.bind(c, &b.x, &final_w, &final_b, &b.h),
            pnorm: k.pnorm.bind(c, &b.scores),
            head: k.linear.bind(c, &embedding, &b.h, &b.logits),
            sampler: k.sampler.bind(c, &b.logits, &b.context, &b.probs, &b.token),
            layers,
            params: ParamPages::default(),
            len: 0,
            last: PassStats::default(),
            weight_bytes,
            inspector: None,
            buffers,
            kernels,
            cfg,
            vocab,
            dtype,
            ctx,
        };
        Ok(backend)
    }

    /// Opens the default adapter and uploads `model`.
    pub async fn open(model: &Model, options: &GpuOptions) -> Result<GpuBackend> {
        GpuBackend::new(GpuContext::new().await?, model, options).await
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// Dispatches and submissions of the last forward pass (a decoded token when it was one token).
    pub fn last_pass(&self) -> PassStats {
        self.last
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Empties the KV cache: positions past `len` are overwritten before attention reads them.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Weight bytes one decoded token reads in the device format.
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weight_bytes
    }

    /// Records the forward pass of `t` tokens (already in the ids buffer) at the next positions,
    /// ending with the final norm and head for the last `rows` of them (none: only the KV cache).
    /// `plan`, when given, records Theta maps and attention probabilities along the way.
    fn encode_forward(&self, enc: &mut Encoder, t: usize, rows: usize, plan: Option<&CapturePlan>) {
        let cfg = &self.cfg;
        let k = &self.kernels;
        let (d, start, f) = (cfg.hidden_size, self.len, cfg.norm_activation);
        let (nq, np, nf) = (cfg.qkv_slots, cfg.proj_slots, cfg.ffn_slots);
        let scores = &self.buffers.scores;
        k.embed.encode(enc, &self.embed, t);
        for (l, layer) in self.layers.iter().enumerate() {
            k.norm.encode(enc, &self.norm, t, 0, d, false);
            k.linear.encode(enc, &layer.qkv_scores, &LinearArgs::plain(t, d, 3 * nq));
            k.pnorm.encode(enc, &self.pnorm, 3 * t, nq, f);
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
            if let Some(plan) = plan {
                plan.attention(enc, l, t, start, cfg.num_heads, d, cfg.head_dim());
                plan.theta(enc, scores, l, Projection::Proj, &ThetaLayout { n: np, lda: np, offset: 0 }, t, start);
            }
            let residual = |n| LinearArgs { accumulate: true, ..LinearArgs::plain(t, n, d) };
            k.linear.encode(enc, &layer.proj_values, &residual(np));
            k.norm.encode(enc, &self.norm, t, 0, d, false);
            k.linear.encode(enc, &layer.ffn_scores, &LinearArgs::plain(t, d, nf));
            k.pnorm.encode(enc, &self.pnorm, t, nf, f);
            if let Some(plan) = plan {
                plan.theta(enc, scores, l, Projection::Ffn, &ThetaLayout { n: nf, lda: nf, offset: 0 }, t, start);
            }
            k.linear.encode(enc, &layer.ffn_values, &residual(nf));
        }
        if rows > 0 {
            k.norm.encode(enc, &self.final_norm, rows, t - rows, d, true);
            k.linear.encode(enc, &self.head, &LinearArgs::plain(rows, d, self.vocab));
        }
    }

    /// Runs `ids` at the next positions (see [`Backend::forward`]).
    pub async fn forward_async(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        check_ids(ids, self.vocab, self.len, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let mut out = Vec::with_capacity(if all_logits { ids.len() } else { 1 } * self.vocab);
        let chunks = ids.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let read = all_logits || i + 1 == chunks;
            let rows = if all_logits { chunk.len() } else { read as usize };
            let bytes = (rows * self.vocab * 4) as u64;
            self.submit_chunk(chunk, rows, None, |enc, s| {
                if read {
                    enc.copy(&s.buffers.logits, 0, &s.buffers.logits_read, bytes);
                }
            });
            if read {
                out.extend(bytes_to_f32(&read_back(&self.ctx, &self.buffers.logits_read, bytes).await?));
            }
        }
        Ok(out)
    }

    /// Feeds `ids` and samples the next token on the device (see [`Backend::next_token`]): only
    /// the token id comes back.
    pub async fn next_token_async(
        &mut self,
        ids: &[u32],
        context: &[u32],
        params: &SamplingParams,
        step: u32,
    ) -> Result<u32> {
        check_ids(ids, self.vocab, self.len, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let (head, tail) = ids.split_at(ids.len() - 1 - (ids.len() - 1) % PREFILL_CHUNK);
        for chunk in head.chunks(PREFILL_CHUNK) {
            self.submit_chunk(chunk, 0, None, |_, _| {});
        }
        let penalised = if params.repetition_penalty != 1.0 { sampler::distinct(context) } else { Vec::new() };
        if penalised.len() > self.cfg.max_positions {
            return Err(Error::Usage(format!(
                "the context holds {} distinct ids, more than the model's positions",
                penalised.len()
            )));
        }
        if !penalised.is_empty() {
            self.ctx.queue.write_buffer(&self.buffers.context, 0, &u32_bytes(&penalised));
        }
        self.submit_chunk(tail, 1, None, |enc, s| {
            s.kernels.sampler.encode(enc, &s.sampler, s.vocab, penalised.len(), params, step);
            enc.copy(&s.buffers.token, 0, &s.buffers.token_read, 4);
        });
        let bytes = read_back(&self.ctx, &self.buffers.token_read, 4).await?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Runs `ids` from an empty cache and returns what `request` asks for, exactly as
    /// [`CpuBackend::inspect`](crate::CpuBackend::inspect) does: whole Theta maps (copied out of the
    /// scores buffer after each normalisation) and attention probabilities. Afterwards the cache
    /// holds the prompt.
    pub async fn inspect_async(&mut self, ids: &[u32], request: &InspectRequest) -> Result<Inspection> {
        let inspector = self.inspector.take().unwrap_or_else(|| Inspector::new(&self.ctx));
        let result = self.inspect_with(&inspector, ids, request).await;
        self.inspector = Some(inspector);
        result
    }

    async fn inspect_with(
        &mut self,
        inspector: &Inspector,
        ids: &[u32],
        request: &InspectRequest,
    ) -> Result<Inspection> {
        let plan = self.plan(inspector, ids, request, None)?;
        self.run_plan(ids, &plan);
        let tokens = ids.len();
        let heads = self.cfg.num_heads;
        let mut parts = Vec::new();
        for map in &plan.maps {
            if let MapSink::Full(buffer) = &map.sink {
                parts.push((buffer, (tokens * map.slots * 4) as u64));
            }
        }
        for sink in &plan.attention {
            parts.push((&sink.probs, (heads * tokens * tokens * 4) as u64));
        }
        let mut read = read_storage(&self.ctx, &parts).await?.into_iter();
        let mut inspection = Inspection { theta: Vec::new(), attention: Vec::new() };
        for map in &plan.maps {
            if let (MapSink::Full(_), Some(bytes)) = (&map.sink, read.next()) {
                let (layer, proj, slots) = (map.layer, map.proj, map.slots);
                inspection.theta.push(Capture { layer, proj, tokens, slots, weights: bytes_to_f32(&bytes) });
            }
        }
        for (sink, bytes) in plan.attention.iter().zip(read) {
            let probs = bytes_to_f32(&bytes);
            inspection.attention.push(AttentionCapture { layer: sink.layer, heads, tokens, probs });
        }
        Ok(inspection)
    }

    /// Runs `ids` from an empty cache and reduces each requested Theta map on the device to its top
    /// `k` slots per token and its column sums: only those leave the GPU (for the 150M model and a
    /// 256-token prompt, 60 maps are 76 MB whole, about 0.5 MB summarised with k = 8).
    pub async fn summarize_async(
        &mut self,
        ids: &[u32],
        request: &InspectRequest,
        k: usize,
    ) -> Result<Vec<ThetaSummary>> {
        if k == 0 {
            return Err(Error::Usage("top-k must be at least 1".into()));
        }
        let inspector = self.inspector.take().unwrap_or_else(|| Inspector::new(&self.ctx));
        let result = self.summarize_with(&inspector, ids, request, k).await;
        self.inspector = Some(inspector);
        result
    }

    async fn summarize_with(
        &mut self,
        inspector: &Inspector,
        ids: &[u32],
        request: &InspectRequest,
        k: usize,
    ) -> Result<Vec<ThetaSummary>> {
        let plan = self.plan(inspector, ids, request, Some(k))?;
        self.run_plan(ids, &plan);
        let tokens = ids.len();
        let mut parts = Vec::new();
        for map in &plan.maps {
            if let MapSink::Summary { top, sums, .. } = &map.sink {
                parts.push((top, (tokens * k.min(map.slots) * 8) as u64));
                parts.push((sums, (map.slots * 4) as u64));
            }
        }
        let mut read = read_storage(&self.ctx, &parts).await?.into_iter();
        let mut out = Vec::with_capacity(plan.maps.len());
        for map in &plan.maps {
            let (MapSink::Summary { .. }, Some(pairs), Some(sums)) = (&map.sink, read.next(), read.next()) else {
                continue;
            };
            let k = k.min(map.slots);
            let pairs: Vec<u32> = pairs.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let top = pairs
                .chunks_exact(2 * k)
                .map(|row| row.chunks_exact(2).map(|p| (p[0] as usize, f32::from_bits(p[1]))).collect())
                .collect();
            let column_sums = bytes_to_f32(&sums);
            out.push(ThetaSummary { layer: map.layer, proj: map.proj, tokens, slots: map.slots, top, column_sums });
        }
        Ok(out)
    }

    /// The dictionary of one parameter token (see [`crate::inspect::dictionary`]), computed with the
    /// model's own kernels: a one-hot Theta row through the layer's value product gives the slot's
    /// value vector, and the tied head scores it against the vocabulary. The KV cache is untouched.
    pub async fn dictionary_async(&mut self, layer: usize, proj: Projection, slot: usize) -> Result<Vec<f32>> {
        check_slot(layer, proj, slot, &self.cfg)?;
        self.ctx.check_alive()?;
        let (d, nq) = (self.cfg.hidden_size, self.cfg.qkv_slots);
        let b = &self.buffers;
        let binds = &self.layers[layer];
        let (values, width, out, out_offset, args) = match proj {
            Projection::Query | Projection::Key | Projection::Value => {
                (&binds.qkv_values, 3 * nq, &b.qkv, proj as usize * d, LinearArgs::stacked_values(1, nq, d))
            }
            Projection::Proj => {
                (&binds.proj_values, self.cfg.proj_slots, &b.x, 0, LinearArgs::plain(1, self.cfg.proj_slots, d))
            }
            Projection::Ffn => {
                (&binds.ffn_values, self.cfg.ffn_slots, &b.x, 0, LinearArgs::plain(1, self.cfg.ffn_slots, d))
            }
        };
        let mut one_hot = vec![0f32; width];
        one_hot[if matches!(proj, Projection::Proj | Projection::Ffn) { slot } else { proj as usize * nq + slot }] =
            1.0;
        self.ctx.queue.write_buffer(&b.scores, 0, &f32_bytes(&one_hot));
        let mut pages = std::mem::take(&mut self.params);
        let mut enc = Encoder::new(&self.ctx, &mut pages);
        let k = &self.kernels;
        k.linear.encode(&mut enc, values, &args);
        enc.copy_at(out, (out_offset * 4) as u64, &b.h, 0, (d * 4) as u64);
        k.linear.encode(&mut enc, &self.head, &LinearArgs::plain(1, d, self.vocab));
        let bytes = (self.vocab * 4) as u64;
        enc.copy(&b.logits, 0, &b.logits_read, bytes);
        enc.submit();
        self.params = pages;
        Ok(bytes_to_f32(&read_back(&self.ctx, &b.logits_read, bytes).await?))
    }

    /// Capture buffers for `request` on `ids`: whole maps, or summaries keeping `top_k` per row.
    fn plan<'a>(
        &self,
        inspector: &'a Inspector,
        ids: &[u32],
        request: &InspectRequest,
        top_k: Option<usize>,
    ) -> Result<CapturePlan<'a>> {
        request.validate(&self.cfg)?;
        check_ids(ids, self.vocab, 0, self.cfg.max_positions)?;
        self.ctx.check_alive()?;
        let ctx = &*self.ctx;
        let tokens = ids.len();
        let maps = request
            .maps()
            .into_iter()
            .map(|(layer, proj)| {
                let slots = proj.slots(&self.cfg);
                let sink = match top_k {
                    None => MapSink::Full(ctx.storage("theta", (tokens * slots * 4) as u64)),
                    Some(k) => inspector.summary_sink(ctx, &self.buffers.scores, tokens, slots, k.min(slots)),
                };
                MapCapture { layer, proj, slots, sink }
            })
            .collect();
        let heads = self.cfg.num_heads;
        let attention = request
            .attention_layers()
            .into_iter()
            .map(|l| inspector.attention_sink(ctx, l, &self.buffers.q, &self.layers[l].k_cache, heads, tokens))
            .collect();
        Ok(CapturePlan { inspector, tokens, k: top_k.unwrap_or(0), maps, attention })
    }

    /// Runs the prompt from position 0 with `plan` recording, a chunk per submission.
    fn run_plan(&mut self, ids: &[u32], plan: &CapturePlan) {
        self.len = 0;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            self.submit_chunk(chunk, 0, Some(plan), |_, _| {});
        }
    }

    /// Encodes and submits one chunk of at most PREFILL_CHUNK tokens, with logits for its last
    /// `rows`; `finish` appends work (sampling, read-back copies) to the same submission.
    fn submit_chunk(
        &mut self,
        ids: &[u32],
        rows: usize,
        plan: Option<&CapturePlan>,
        finish: impl FnOnce(&mut Encoder, &GpuBackend),
    ) {
        self.ctx.queue.write_buffer(&self.buffers.ids, 0, &u32_bytes(ids));
        let mut pages = std::mem::take(&mut self.params);
        let mut enc = Encoder::new(&self.ctx, &mut pages);
        self.encode_forward(&mut enc, ids.len(), rows, plan);
        finish(&mut enc, self);
        let dispatches = enc.dispatches;
        enc.submit();
        self.params = pages;
        self.len += ids.len();
        self.last = PassStats { dispatches, submissions: 1 };
    }
}

/// What a model takes on the device, for the error that says it does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
}

impl DeviceMemory {
    pub fn of(cfg: &ModelConfig, vocab: usize, dtype: WeightDtype) -> DeviceMemory {
        let (t, d, v) = (PREFILL_CHUNK as u64, cfg.hidden_size as u64, vocab as u64);
        let widest = (3 * cfg.qkv_slots).max(cfg.proj_slots).max(cfg.ffn_slots) as u64;
        DeviceMemory {
            weights: cfg.weight_bytes_per_token(vocab, dtype.bytes()) as u64,
            kv_cache: 2 * cfg.num_layers as u64 * cfg.max_positions as u64 * d * 4,
            // Residual, norm, q, o, head input (d each), q|k|v (3d), scores, logits and their read-back.
            activations: t * (8 * d + widest + 2 * v) * 4,
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations
    }
}

impl std::fmt::Display for DeviceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        write!(
            f,
            "about {:.1} MB ({:.1} MB of weights, {:.1} MB of KV cache, {:.1} MB of activations)",
            mb(self.total()),
            mb(self.weights),
            mb(self.kv_cache),
            mb(self.activations)
        )
    }
}

/// Where an upload takes the weights from: a model in memory, or its file tensor by tensor.
enum Weights<'a> {
    Model(&'a Model),
    File(ModelTensors<'a>),
}

impl Weights<'_> {
    fn embedding(&mut self) -> Result<Cow<'_, [f32]>> {
        Ok(match self {
            Weights::Model(m) => m.embedding.to_f32(),
            Weights::File(t) => Cow::Owned(t.embedding()?.0),
        })
    }

    fn block(&mut self, layer: usize) -> Result<Cow<'_, Block>> {
        Ok(match self {
            Weights::Model(m) => Cow::Borrowed(&m.blocks[layer]),
            Weights::File(t) => Cow::Owned(t.block(layer)?),
        })
    }

    /// The final norm's weight and bias.
    fn final_norm(&mut self) -> Result<[Cow<'_, [f32]>; 2]> {
        Ok(match self {
            Weights::Model(m) => [Cow::Borrowed(&m.final_norm_weight), Cow::Borrowed(&m.final_norm_bias)],
            Weights::File(t) => {
                let (w, b) = t.final_norm()?;
                [Cow::Owned(w), Cow::Owned(b)]
            }
        })
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
        self.len
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
