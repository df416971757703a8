//! The buffer plan: what a model takes on the device, and its upload (weights in the chosen
//! dtype, activations, KV caches, bind groups) from a model in memory or its file tensor by tensor.

use std::borrow::Cow;
use std::sync::Arc;

use super::context::{f32_bytes, ParamPages};
use super::matmul::Linear;
use super::weights::{upload, Store};
use super::{attention, embed, layer_norm, pnorm, rope, sampler};
use super::{
    Buffers, GpuBackend, GpuContext, GpuOptions, Kernels, LayerBinds, LayerWeights, PassStats, WeightDtype,
    PREFILL_CHUNK,
};
use crate::config::ModelConfig;
use crate::cpu::kernels::rope_inv_freq;
use crate::error::{Error, Result};
use crate::model::{Block, Model, ModelTensors};

impl GpuBackend {
    pub(super) async fn upload(ctx: Arc<GpuContext>, weights: Weights<'_>, options: &GpuOptions) -> Result<GpuBackend> {
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
pub(super) enum Weights<'a> {
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
