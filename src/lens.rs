//! The logit lens: what each block would predict if the model stopped there. The residual stream
//! after block `l` goes through the final layer norm (with its weight and bias) and the tied head,
//! then a softmax; per block and token the `k` most likely next tokens are kept. After the last
//! block this is the model's own prediction.

use crate::cpu::kernels::layer_norm_affine;
use crate::cpu::products::matmul_bt_weights;
use crate::inspect::top_k;
use crate::model::Model;

/// Per block and token, the `k` most likely next tokens and their probabilities, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitLens {
    pub layers: usize,
    pub tokens: usize,
    pub k: usize,
    /// `[layer][token][rank]` flattened: (token id, probability).
    pub top: Vec<(u32, f32)>,
}

impl LogitLens {
    /// Room for every block of a `tokens`-long prompt.
    pub fn new(layers: usize, tokens: usize, k: usize) -> LogitLens {
        LogitLens { layers, tokens, k, top: vec![(0, 0.0); layers * tokens * k] }
    }

    /// The prediction of block `layer` at position `token`, most likely first.
    pub fn get(&self, layer: usize, token: usize) -> &[(u32, f32)] {
        let at = (layer * self.tokens + token) * self.k;
        &self.top[at..at + self.k]
    }

    /// The rows of block `layer`, one per token, to fill.
    pub fn layer_mut(&mut self, layer: usize) -> std::slice::ChunksExactMut<'_, (u32, f32)> {
        let rows = self.tokens * self.k;
        self.top[layer * rows..(layer + 1) * rows].chunks_exact_mut(self.k)
    }
}

/// The `k` most likely tokens of `softmax(logits)`, most likely first (ties by lower id).
pub fn top_probabilities(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let log_z = logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    with_probabilities(&top_k(logits, k), log_z)
}

/// Top logits as (id, probability) given the row's log-sum-exp.
pub fn with_probabilities(top: &[(usize, f32)], log_z: f64) -> Vec<(u32, f32)> {
    top.iter().map(|&(id, logit)| (id as u32, (logit as f64 - log_z).exp() as f32)).collect()
}

/// Fills block `layer` of `lens` from the residual stream `x` [tokens × hidden] after that block.
pub fn record(lens: &mut LogitLens, layer: usize, model: &Model, x: &[f32]) {
    let (d, vocab, k) = (model.config.hidden_size, model.vocab_size, lens.k);
    let mut h = x.to_vec();
    for row in h.chunks_exact_mut(d) {
        layer_norm_affine(row, &model.final_norm_weight, &model.final_norm_bias, model.config.layernorm_eps);
    }
    let mut logits = vec![0f32; lens.tokens * vocab];
    matmul_bt_weights(&h, &model.embedding, lens.tokens, d, vocab, &mut logits);
    for (out, row) in lens.layer_mut(layer).zip(logits.chunks_exact(vocab)) {
        out.copy_from_slice(&top_probabilities(row, k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_probabilities_are_the_softmax_largest_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        let got = top_probabilities(&logits, 3);
        let ids: Vec<u32> = got.iter().map(|p| p.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        for (id, p) in got {
            assert!((p as f64 - (logits[id as usize] as f64).exp() / z).abs() < 1e-7);
        }
    }
}
