//! The Pattention inspector: what a TokenFormer layer does with each token of a prompt.
//!
//! Every projection of a TokenFormer block is a Pattention layer, `out = Theta · V` with
//! `Theta = f(X · Kᵀ)` over the layer's `n` parameter tokens (docs/numerics.md, "What is
//! computed"). Theta says how much of each parameter token's value a token takes, so it is the thing
//! to look at when asking "which parameters does this token use?". This module records Theta (after the normalisation and
//! activation, i.e. exactly the numbers multiplied into the value tokens) and the token-to-token
//! attention probabilities of a block, then reduces them (top-k slots per token, column sums).
//!
//! Recording is opt-in: [`CpuBackend::inspect`](crate::CpuBackend::inspect) runs the backend's one forward
//! implementation with a [`Recorder`] attached; ordinary generation passes none and pays one
//! `Option` test per Pattention layer. Nothing here depends on the CLI, so it builds for wasm32.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::lens::LogitLens;
use crate::model::{Model, Projection};

/// What to record during one forward pass over a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectRequest {
    /// Block indices, 0-based (duplicates are recorded once).
    pub layers: Vec<usize>,
    /// Pattention layers of those blocks whose Theta to keep (any subset, in any order; duplicates
    /// are recorded once).
    pub projections: Vec<Projection>,
    /// Also keep the blocks' causal attention probabilities.
    pub attention: bool,
    /// Also read every block's prediction (the logit lens), keeping this many tokens per position.
    pub lens: Option<usize>,
}

impl InspectRequest {
    /// Theta of one Pattention layer.
    pub fn theta(layer: usize, proj: Projection) -> Self {
        InspectRequest { layers: vec![layer], projections: vec![proj], attention: false, lens: None }
    }

    /// The attention probabilities of one block.
    pub fn attention(layer: usize) -> Self {
        InspectRequest { layers: vec![layer], projections: Vec::new(), attention: true, lens: None }
    }

    /// Everything about one block: Theta of all five Pattention layers and the attention probabilities.
    pub fn block(layer: usize) -> Self {
        InspectRequest { layers: vec![layer], projections: Projection::ALL.to_vec(), attention: true, lens: None }
    }

    /// Theta of every Pattention layer of the model (what the inspector's grid shows).
    pub fn every_theta(cfg: &ModelConfig) -> Self {
        InspectRequest {
            layers: (0..cfg.num_layers).collect(),
            projections: Projection::ALL.to_vec(),
            attention: false,
            lens: None,
        }
    }

    /// The logit lens alone: every block's `k` most likely next tokens at every position.
    pub fn logit_lens(k: usize) -> Self {
        InspectRequest { layers: Vec::new(), projections: Vec::new(), attention: false, lens: Some(k) }
    }

    /// Fails with [`Error::LayerOutOfRange`] when the model lacks one of the blocks.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        if self.lens == Some(0) {
            return Err(Error::Usage("the logit lens needs k of at least 1".into()));
        }
        self.layers.iter().try_for_each(|&layer| check_layer(layer, cfg))
    }

    /// The (layer, projection) pairs whose Theta is wanted, each once, in request order.
    pub fn maps(&self) -> Vec<(usize, Projection)> {
        let mut maps = Vec::new();
        for &layer in &self.layers {
            for &proj in &self.projections {
                if !maps.contains(&(layer, proj)) {
                    maps.push((layer, proj));
                }
            }
        }
        maps
    }

    /// The blocks whose attention probabilities are wanted, each once.
    pub fn attention_layers(&self) -> Vec<usize> {
        let mut layers: Vec<usize> = Vec::new();
        if self.attention {
            for &l in &self.layers {
                if !layers.contains(&l) {
                    layers.push(l);
                }
            }
        }
        layers
    }
}

/// [`Error::LayerOutOfRange`] unless `layer` is a block of the model.
pub fn check_layer(layer: usize, cfg: &ModelConfig) -> Result<()> {
    if layer >= cfg.num_layers {
        return Err(Error::LayerOutOfRange { layer, layers: cfg.num_layers });
    }
    Ok(())
}

/// One Theta map reduced to what a person looks at first: each token's strongest slots and each
/// slot's total weight over the prompt. This is what leaves the GPU for a whole model's maps.
#[derive(Debug, Clone, PartialEq)]
pub struct ThetaSummary {
    pub layer: usize,
    pub proj: Projection,
    pub tokens: usize,
    pub slots: usize,
    /// Per token, the `k` largest (slot, value), as [`top_k`] orders them.
    pub top: Vec<Vec<(usize, f32)>>,
    /// Per slot, the sum of its weight over the tokens ([`column_sums`]).
    pub column_sums: Vec<f32>,
}

/// Theta of one Pattention layer for every token of a prompt: `weights[token * slots + slot]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub layer: usize,
    pub proj: Projection,
    /// Prompt length (rows).
    pub tokens: usize,
    /// The layer's parameter tokens `n` (columns).
    pub slots: usize,
    /// Row-major [tokens × slots], post-normalisation: the coefficients of the value tokens.
    pub weights: Vec<f32>,
}

impl Capture {
    /// Theta row of one token.
    pub fn row(&self, token: usize) -> &[f32] {
        &self.weights[token * self.slots..(token + 1) * self.slots]
    }

    /// Theta rows in token order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.weights.chunks_exact(self.slots)
    }

    /// The `k` largest slots of every token, see [`top_k`].
    pub fn top_k(&self, k: usize) -> Vec<Vec<(usize, f32)>> {
        self.rows().map(|row| top_k(row, k)).collect()
    }

    /// How much each slot is used over the whole prompt, see [`column_sums`].
    pub fn column_sums(&self) -> Vec<f32> {
        column_sums(&self.weights, self.slots)
    }

    /// The top `k` slots per token and the column sums.
    pub fn summary(&self, k: usize) -> ThetaSummary {
        ThetaSummary {
            layer: self.layer,
            proj: self.proj,
            tokens: self.tokens,
            slots: self.slots,
            top: self.top_k(k),
            column_sums: self.column_sums(),
        }
    }
}

/// The `k` largest entries of one Theta row as (slot index, value), largest first; equal values by
/// lower index first, so the order is deterministic. `k` past the row length gives the whole row.
/// Values are compared with [`f32::total_cmp`] (a NaN, which a finite model cannot produce, sorts as
/// the largest instead of making the order undefined).
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
    let by_value = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(order.len());
    if k < order.len() {
        order.select_nth_unstable_by(k, by_value);
        order.truncate(k);
    }
    order.sort_unstable_by(by_value);
    order
}

/// [`Error::SlotOutOfRange`] unless `slot` is a parameter token of `proj` in block `layer`.
pub fn check_slot(layer: usize, proj: Projection, slot: usize, cfg: &ModelConfig) -> Result<()> {
    check_layer(layer, cfg)?;
    let slots = proj.slots(cfg);
    if slot >= slots {
        return Err(Error::SlotOutOfRange { layer, proj: proj.as_str(), slot, slots });
    }
    Ok(())
}

/// A parameter token's "dictionary": its value vector (what the layer adds in proportion to Theta)
/// scored against every vocabulary token through the tied embedding, `E · v`, one score per id.
/// No final norm is applied: the scores are the raw projection, comparable across slots of a layer.
pub fn dictionary(model: &Model, layer: usize, proj: Projection, slot: usize) -> Result<Vec<f32>> {
    check_slot(layer, proj, slot, &model.config)?;
    let p = model.blocks[layer].get(proj);
    let (value, d_out) = (p.value_token(slot), p.d_out());
    let mut scores = vec![0f32; model.vocab_size];
    crate::cpu::products::matmul_bt_weights(&value, &model.embedding, 1, d_out, model.vocab_size, &mut scores);
    Ok(scores)
}

/// Sum over tokens of each slot's weight, for row-major `weights` [tokens × slots]: which parameter
/// tokens a whole prompt leans on. Accumulated in f64 so long prompts do not lose small slots.
pub fn column_sums(weights: &[f32], slots: usize) -> Vec<f32> {
    let mut sums = vec![0f64; slots];
    for row in weights.chunks_exact(slots) {
        sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
    }
    sums.into_iter().map(|s| s as f32).collect()
}

/// Causal attention probabilities of one block, per head: `probs[(head * tokens + query) * tokens + key]`.
/// Each (head, query) row is the post-softmax distribution over key positions `0..=query`; entries
/// for later keys are exactly 0.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionCapture {
    pub layer: usize,
    pub heads: usize,
    pub tokens: usize,
    pub probs: Vec<f32>,
}

impl AttentionCapture {
    /// The distribution of query position `query` in head `head`, over all `tokens` key positions.
    pub fn row(&self, head: usize, query: usize) -> &[f32] {
        let start = (head * self.tokens + query) * self.tokens;
        &self.probs[start..start + self.tokens]
    }
}

/// Everything one inspected forward pass recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// One capture per requested (layer, projection), in [`InspectRequest::maps`] order.
    pub theta: Vec<Capture>,
    /// One capture per block in [`InspectRequest::attention_layers`] order.
    pub attention: Vec<AttentionCapture>,
    /// Every block's prediction, when the request asked for the lens.
    pub lens: Option<LogitLens>,
}

impl Inspection {
    /// The capture of `proj` in block `layer`, if it was requested.
    pub fn theta(&self, layer: usize, proj: Projection) -> Option<&Capture> {
        self.theta.iter().find(|c| c.layer == layer && c.proj == proj)
    }

    /// The attention probabilities of block `layer`, if they were requested.
    pub fn attention(&self, layer: usize) -> Option<&AttentionCapture> {
        self.attention.iter().find(|c| c.layer == layer)
    }
}

/// The capture sink a backend's forward pass writes into. Buffers are sized up front for a prompt of
/// `tokens` run from position 0, so the forward pass only copies rows into place.
#[derive(Debug)]
pub struct Recorder {
    inspection: Inspection,
}

impl Recorder {
    /// Buffers for `request` on a `tokens`-long prompt of a model scoring `vocab` ids.
    pub fn new(request: &InspectRequest, cfg: &ModelConfig, vocab: usize, tokens: usize) -> Result<Self> {
        request.validate(cfg)?;
        let theta = request
            .maps()
            .into_iter()
            .map(|(layer, proj)| {
                let slots = proj.slots(cfg);
                Capture { layer, proj, tokens, slots, weights: vec![0.0; tokens * slots] }
            })
            .collect();
        let heads = cfg.num_heads;
        let attention = request
            .attention_layers()
            .into_iter()
            .map(|layer| AttentionCapture { layer, heads, tokens, probs: vec![0.0; heads * tokens * tokens] })
            .collect();
        let lens = request.lens.map(|k| LogitLens::new(cfg.num_layers, tokens, k.min(vocab)));
        Ok(Recorder { inspection: Inspection { theta, attention, lens } })
    }

    /// Where Theta [tokens × slots] of `proj` in block `layer` goes, if it is wanted.
    pub fn theta_sink(&mut self, layer: usize, proj: Projection) -> Option<&mut [f32]> {
        self.inspection.theta.iter_mut().find(|c| c.layer == layer && c.proj == proj).map(|c| c.weights.as_mut_slice())
    }

    /// Where the attention probabilities of block `layer` go, if they are wanted.
    pub fn attention_sink(&mut self, layer: usize) -> Option<&mut AttentionCapture> {
        self.inspection.attention.iter_mut().find(|c| c.layer == layer)
    }

    /// Where the logit lens goes, if it is wanted.
    pub fn lens_sink(&mut self) -> Option<&mut LogitLens> {
        self.inspection.lens.as_mut()
    }

    pub fn finish(self) -> Inspection {
        self.inspection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_sorts_by_value_then_index() {
        let row = [0.5, 2.0, -1.0, 2.0, 0.5, 3.0];
        assert_eq!(top_k(&row, 3), vec![(5, 3.0), (1, 2.0), (3, 2.0)]);
        assert_eq!(top_k(&row, 5), vec![(5, 3.0), (1, 2.0), (3, 2.0), (0, 0.5), (4, 0.5)]);
        assert_eq!(top_k(&row, 100).len(), 6);
        assert_eq!(top_k(&row, 0), vec![]);
        // Ties across the cut keep the lower index.
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2), vec![(0, 1.0), (1, 1.0)]);
    }

    #[test]
    fn column_sums_add_over_tokens() {
        let w = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        assert_eq!(column_sums(&w, 3), vec![11.0, 22.0, 33.0]);
    }
}
