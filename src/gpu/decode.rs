//! The decode path: one token through a block in 7 dispatches, each product launching enough
//! workgroups for a real GPU. A Pattention is two dispatches (scores with the normalisation's
//! statistics, then values applying it while loading Theta); the layer norms run in the prologue of
//! the product that reads them; RoPE and the KV-cache append run inside attention, which is split
//! along the context, its splits combined by the next product. Value products split their slots
//! and leave partial rows, added by whoever reads them, so the residual stream is a few partial rows
//! in one of two buffers (read one, write the other):
//!
//! ```text
//! qkv scores (LN of A) → qkv values → attention → proj scores → proj values (A → B)
//!   → ffn scores (LN of B) → ffn values (B → A)
//! ```
//!
//! Prefill, inspection and models the kernels do not fit take the general path in `mod.rs`.

use super::context::{Encoder, GpuContext};
use super::decode_attention::{self, DecodeAttention};
use super::embed::{Embed, EmbedBinding};
use super::kv_cache::KvDtype;
use super::scores::{self, DecodeShape, Scores, ScoresBinding, ScoresInput, MAX_HIDDEN};
use super::values::{self, Values, ValuesBinding, MAX_SPLITS};
use super::weights::{padded, Matrix};
use super::LayerWeights;
use crate::config::ModelConfig;
use crate::dtype::Dtype;

pub(super) struct DecodeKernels {
    scores: Scores,
    /// The head's scores, when the embedding is stored in another dtype than the parameter tokens.
    head: Option<Scores>,
    values: Values,
    attention: DecodeAttention,
}

struct DecodeLayer {
    qkv_scores: ScoresBinding,
    qkv_values: ValuesBinding,
    attention: wgpu::BindGroup,
    proj_scores: ScoresBinding,
    proj_values: ValuesBinding,
    ffn_scores: ScoresBinding,
    ffn_values: ValuesBinding,
}

pub(super) struct Decode {
    kernels: DecodeKernels,
    embed: EmbedBinding,
    layers: Vec<DecodeLayer>,
    head: ScoresBinding,
}

/// The buffers of the general path the decode path shares: the token id, the scores, the logits,
/// the final norm's weight and bias, the RoPE table and each layer's caches.
pub(super) struct Shared<'a> {
    pub ids: &'a wgpu::Buffer,
    pub scores: &'a wgpu::Buffer,
    pub logits: &'a wgpu::Buffer,
    pub final_norm: [&'a wgpu::Buffer; 2],
    pub rope_table: &'a wgpu::Buffer,
    pub caches: Vec<[&'a wgpu::Buffer; 2]>,
}

/// Whether the decode kernels take a model of `cfg`: the hidden size and Pattentions within their
/// workgroup memory.
fn fits_kernels(cfg: &ModelConfig) -> bool {
    cfg.hidden_size <= MAX_HIDDEN && [cfg.qkv_slots, cfg.proj_slots, cfg.ffn_slots].into_iter().all(values::fits)
}

impl DecodeKernels {
    /// The decode path's pipelines for a model of `cfg` whose embedding is stored in `embedding`,
    /// or None when it does not fit them.
    pub fn new(
        ctx: &GpuContext,
        cfg: &ModelConfig,
        shape: DecodeShape,
        embedding: Dtype,
        kv: KvDtype,
    ) -> Option<DecodeKernels> {
        fits_kernels(cfg).then(|| DecodeKernels {
            scores: Scores::new(ctx, shape, cfg.layernorm_eps),
            head: (embedding != shape.dtype)
                .then(|| Scores::new(ctx, DecodeShape { dtype: embedding, ..shape }, cfg.layernorm_eps)),
            values: Values::new(ctx, shape),
            attention: DecodeAttention::new(ctx, cfg.head_dim(), shape.for_gpu(), kv),
        })
    }

    /// The scores kernel of the embedding's dtype.
    fn head(&self) -> &Scores {
        self.head.as_ref().unwrap_or(&self.scores)
    }
}

impl Decode {
    /// The decode path's buffers and bind groups over `kernels`, for matrices in one buffer each
    /// (the loader compiles the decode kernels only then).
    pub fn new(
        ctx: &GpuContext,
        cfg: &ModelConfig,
        kernels: DecodeKernels,
        embed: &Embed,
        embedding: &Matrix,
        layers: &[LayerWeights],
        shared: &Shared,
    ) -> Decode {
        debug_assert!(layers.iter().flat_map(LayerWeights::matrices).all(|m| m.chunks.len() == 1));
        let d = cfg.hidden_size;
        let row = padded(d) as u64 * 4;
        let residual =
            [ctx.storage("residual A", MAX_SPLITS as u64 * row), ctx.storage("residual B", MAX_SPLITS as u64 * row)];
        let qkv = ctx.storage("q|k|v partials", MAX_SPLITS as u64 * 3 * row);
        let attention =
            ctx.storage("attention partials", decode_attention::partial_floats(d, cfg.num_heads) as u64 * 4);
        let blocks = [(cfg.qkv_slots, 3), (cfg.proj_slots, 1), (cfg.ffn_slots, 1)]
            .map(|(n, groups)| groups * n.div_ceil(scores::rows_per_workgroup(n, groups, kernels.scores.shape())));
        let stats = ctx.storage("Pattention statistics", blocks.into_iter().max().unwrap_or(1) as u64 * 8);
        let (k, [a, b]) = (&kernels, &residual);
        let s = shared.scores;
        let layers = layers
            .iter()
            .zip(&shared.caches)
            .map(|(w, &caches)| DecodeLayer {
                qkv_scores: k.scores.bind(ctx, &w.qkv_keys, 3, a, s, &stats, shared.final_norm),
                qkv_values: k.values.bind(ctx, &w.qkv_values, s, &qkv, &stats, a),
                attention: k.attention.bind(ctx, &qkv, shared.rope_table, caches, &attention),
                proj_scores: k.scores.bind(ctx, &w.proj_keys, 1, &attention, s, &stats, shared.final_norm),
                proj_values: k.values.bind(ctx, &w.proj_values, s, b, &stats, a),
                ffn_scores: k.scores.bind(ctx, &w.ffn_keys, 1, b, s, &stats, shared.final_norm),
                ffn_values: k.values.bind(ctx, &w.ffn_values, s, a, &stats, b),
            })
            .collect();
        let head = k.head().bind(ctx, embedding, 1, a, shared.logits, &stats, shared.final_norm);
        let embed = embed.bind(ctx, shared.ids, embedding, a);
        Decode { kernels, embed, layers, head }
    }

    /// Records one token at position `pos` (its id already in the ids buffer), with the head's
    /// logits when `logits`. Returns the dispatches of one block.
    pub fn encode(&self, enc: &mut Encoder, embed: &Embed, cfg: &ModelConfig, pos: usize, logits: bool) -> u32 {
        let k = &self.kernels;
        let f = cfg.norm_activation;
        let (d, heads, half) = (cfg.hidden_size, cfg.num_heads, cfg.rotary_dims() / 2);
        embed.encode(enc, &self.embed, 1);
        let mut parts = 1;
        let mut per_block = 0;
        for layer in &self.layers {
            let before = enc.recorded.len();
            k.scores.encode(enc, "qkv scores", &layer.qkv_scores, ScoresInput::Residual { parts }, Some(f));
            let blocks = k.scores.blocks(&layer.qkv_scores);
            let qkv_parts = k.values.encode(enc, "qkv values", &layer.qkv_values, f, blocks, 0);
            let splits = k.attention.encode(enc, &layer.attention, pos, d, heads, half, qkv_parts);
            let input = ScoresInput::Attention { splits, head_dim: d / heads };
            k.scores.encode(enc, "proj scores", &layer.proj_scores, input, Some(f));
            let blocks = k.scores.blocks(&layer.proj_scores);
            let proj_parts = k.values.encode(enc, "proj values", &layer.proj_values, f, blocks, parts);
            let input = ScoresInput::Residual { parts: proj_parts };
            k.scores.encode(enc, "ffn scores", &layer.ffn_scores, input, Some(f));
            let blocks = k.scores.blocks(&layer.ffn_scores);
            parts = k.values.encode(enc, "ffn values", &layer.ffn_values, f, blocks, proj_parts);
            per_block = (enc.recorded.len() - before) as u32;
        }
        if logits {
            k.head().encode(enc, "head", &self.head, ScoresInput::FinalNorm { parts }, None);
        }
        per_block
    }
}
