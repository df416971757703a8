//! The CPU backend: the exact f32 computation with a KV cache. It is the reference every other
//! backend is tested against, and the fallback where WebGPU is missing (it builds for wasm32).

pub mod kernels;
pub mod kv_cache;
pub mod parallel;
pub mod products;
pub mod quantized;
pub mod simd;

use std::sync::Arc;

use crate::config::NormActivation;
use crate::error::Result;
use crate::generation::{check_ids, check_tokens, Backend};
use crate::inspect::{InspectRequest, Inspection, Recorder};
use crate::intervene::{scale_columns, Interventions};
use crate::model::{Model, Pattention, Projection};
use crate::KvDtype;
use kernels::{apply_rope, layer_norm, layer_norm_affine, normalize_scores, rope_inv_freq};
use kv_cache::KvRows;
use products::{matmul_bt_weights, matmul_weights};

pub struct CpuBackend {
    model: Arc<Model>,
    inv_freq: Vec<f64>,
    /// Post-RoPE keys and the values of every position so far, per layer, [len × hidden].
    k_cache: Vec<KvRows>,
    v_cache: Vec<KvRows>,
    len: usize,
    /// Theta columns every forward pass scales (see [`crate::intervene`]).
    interventions: Interventions,
}

impl CpuBackend {
    pub fn new(model: Arc<Model>) -> Self {
        let cfg = &model.config;
        let inv_freq = rope_inv_freq(cfg.rotary_dims(), cfg.rotary_base);
        let (k_cache, v_cache) = Self::caches(cfg.num_layers, KvDtype::F32);
        CpuBackend { inv_freq, k_cache, v_cache, len: 0, model, interventions: Interventions::default() }
    }

    fn caches(layers: usize, dtype: KvDtype) -> (Vec<KvRows>, Vec<KvRows>) {
        let layer = || (0..layers).map(|_| KvRows::new(dtype)).collect();
        (layer(), layer())
    }

    /// Holds keys and values in `dtype` from now on (f32 by default, the exact path; f16 halves
    /// the cache's memory and rounds what it holds). The cache is emptied.
    pub fn set_kv_cache(&mut self, dtype: KvDtype) {
        (self.k_cache, self.v_cache) = Self::caches(self.model.blocks.len(), dtype);
        self.len = 0;
    }

    pub fn kv_dtype(&self) -> KvDtype {
        self.k_cache.first().map_or(KvDtype::F32, KvRows::dtype)
    }

    /// Applies `set` to every forward pass from now on (an empty set removes them). The KV cache,
    /// computed under the previous set, is emptied.
    pub fn set_interventions(&mut self, set: Interventions) {
        self.interventions = set;
        self.reset();
    }

    pub fn interventions(&self) -> &Interventions {
        &self.interventions
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Runs `ids` from an empty cache (position 0) and returns what `request` asked for: Theta of
    /// Pattention layers and/or the attention probabilities of one block, for every prompt token.
    ///
    /// This is the ordinary forward pass with a [`Recorder`] attached, so the numbers are exactly the
    /// ones generation uses. The cache is reset first and afterwards holds the prompt, as after
    /// `reset()` then `forward(ids, ..)`. A bad layer or prompt fails before the cache is touched.
    pub fn inspect(&mut self, ids: &[u32], request: &InspectRequest) -> Result<Inspection> {
        let mut recorder = Recorder::new(request, &self.model.config, self.model.vocab_size, ids.len())?;
        check_ids(ids, self.vocab_size(), 0, self.max_positions())?;
        self.reset();
        parallel::on_pool(|| self.forward_pass(ids, false, Some(&mut recorder)))?;
        Ok(recorder.finish())
    }

    /// The one forward implementation. `recorder`, when given, receives copies of the Theta rows and
    /// attention probabilities it asks for; it was sized for a prompt starting at position 0.
    fn forward_pass(&mut self, ids: &[u32], all_logits: bool, mut recorder: Option<&mut Recorder>) -> Result<Vec<f32>> {
        check_tokens(self, ids)?;
        let model = &*self.model;
        let cfg = &model.config;
        let (d, t, start) = (cfg.hidden_size, ids.len(), self.len);
        let (heads, hd) = (cfg.num_heads, cfg.head_dim());
        debug_assert!(recorder.is_none() || start == 0, "a recorder is sized for a pass from position 0");

        let mut x = vec![0f32; t * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(ids) {
            model.embedding.read_row(id as usize, row);
        }
        let (mut a, mut q, mut k, mut v, mut o) =
            (vec![0f32; t * d], vec![0f32; t * d], vec![0f32; t * d], vec![0f32; t * d], vec![0f32; t * d]);
        let mut delta = vec![0f32; t * d];
        let mut o_heads = vec![0f32; heads * t * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let unit = simd::Unit::detect();

        for layer in 0..model.blocks.len() {
            a.copy_from_slice(&x);
            a.chunks_exact_mut(d).for_each(|row| layer_norm(row, cfg.layernorm_eps));
            self.pattention(layer, Projection::Query, &a, t, &mut q, &mut recorder);
            self.pattention(layer, Projection::Key, &a, t, &mut k, &mut recorder);
            self.pattention(layer, Projection::Value, &a, t, &mut v, &mut recorder);
            for (i, (qrow, krow)) in q.chunks_exact_mut(d).zip(k.chunks_exact_mut(d)).enumerate() {
                for h in 0..heads {
                    apply_rope(&mut qrow[h * hd..(h + 1) * hd], start + i, &self.inv_freq);
                    apply_rope(&mut krow[h * hd..(h + 1) * hd], start + i, &self.inv_freq);
                }
            }
            let (kc, vc) = (&mut self.k_cache[layer], &mut self.v_cache[layer]);
            kc.extend(&k);
            vc.extend(&v);

            // Causal attention: token i sees cache positions 0..=start+i. Heads run in parallel,
            // each writing its [t × hd] block of o_heads (and its map of a capture).
            let (kc, vc) = (&*kc, &*vc);
            let attention = recorder.as_deref_mut().and_then(|r| r.attention_sink(layer));
            let captures: Vec<Option<&mut [f32]>> = match attention {
                Some(cap) => cap.probs.chunks_exact_mut(cap.tokens * cap.tokens).map(Some).collect(),
                None => (0..heads).map(|_| None).collect(),
            };
            let jobs: Vec<_> = o_heads.chunks_exact_mut(t * hd).zip(captures).collect();
            parallel::for_each(jobs, |h, (out, mut capture)| {
                let (keys, values) = (kc.head(unit, h, hd, d, start + t), vc.head(unit, h, hd, d, start + t));
                let mut probs = vec![0f32; start + t];
                for (i, oh) in out.chunks_exact_mut(hd).enumerate() {
                    let visible = start + i + 1;
                    let qh = &q[i * d + h * hd..i * d + (h + 1) * hd];
                    for (j, p) in probs[..visible].iter_mut().enumerate() {
                        *p = kernels::dot(qh, keys.row(j)) * scale;
                    }
                    kernels::softmax_scaled(&mut probs[..visible], 1.0);
                    if let Some(cap) = capture.as_deref_mut() {
                        cap[i * t..i * t + visible].copy_from_slice(&probs[..visible]);
                    }
                    oh.fill(0.0);
                    for (j, &p) in probs[..visible].iter().enumerate() {
                        kernels::axpy(oh, p, values.row(j));
                    }
                }
            });
            for (i, row) in o.chunks_exact_mut(d).enumerate() {
                for (h, oh) in row.chunks_exact_mut(hd).enumerate() {
                    oh.copy_from_slice(&o_heads[(h * t + i) * hd..(h * t + i + 1) * hd]);
                }
            }
            self.pattention(layer, Projection::Proj, &o, t, &mut delta, &mut recorder);
            x.iter_mut().zip(&delta).for_each(|(xi, di)| *xi += di);

            a.copy_from_slice(&x);
            a.chunks_exact_mut(d).for_each(|row| layer_norm(row, cfg.layernorm_eps));
            self.pattention(layer, Projection::Ffn, &a, t, &mut delta, &mut recorder);
            x.iter_mut().zip(&delta).for_each(|(xi, di)| *xi += di);
            if let Some(lens) = recorder.as_deref_mut().and_then(Recorder::lens_sink) {
                crate::lens::record(lens, layer, model, &x);
            }
        }
        self.len += t;

        let rows = if all_logits { t } else { 1 };
        let mut h = x[(t - rows) * d..].to_vec();
        for row in h.chunks_exact_mut(d) {
            layer_norm_affine(row, &model.final_norm_weight, &model.final_norm_bias, cfg.layernorm_eps);
        }
        let vocab = model.vocab_size;
        let mut logits = vec![0f32; rows * vocab];
        matmul_bt_weights(&h, &model.embedding, rows, d, vocab, &mut logits);
        Ok(logits)
    }
}

impl CpuBackend {
    /// Pattention `proj` of block `layer` on `t` rows of `x`, with this backend's interventions,
    /// recording Theta where `recorder` wants it.
    fn pattention(
        &self,
        layer: usize,
        proj: Projection,
        x: &[f32],
        t: usize,
        out: &mut [f32],
        recorder: &mut Option<&mut Recorder>,
    ) {
        let p = self.model.blocks[layer].get(proj);
        let scales = self.interventions.of(layer, proj);
        let act = self.model.config.norm_activation;
        pattention_scaled(x, t, p, act, &scales, out, theta_sink(recorder, layer, proj));
    }
}

/// The recorder's buffer for Theta of `proj` in block `layer`, if there is a recorder and it wants it.
fn theta_sink<'a>(recorder: &'a mut Option<&mut Recorder>, layer: usize, proj: Projection) -> Option<&'a mut [f32]> {
    recorder.as_deref_mut()?.theta_sink(layer, proj)
}

/// `out[t×d_out] = f(x[t×d_in] · Kᵀ) · V`, the whole Pattention layer for `t` tokens.
/// The widths come from the parameter tokens: d_in = |K| / n, d_out = |V| / n.
pub fn pattention(x: &[f32], t: usize, p: &Pattention, activation: NormActivation, out: &mut [f32]) {
    pattention_scaled(x, t, p, activation, &[], out, None);
}

/// [`pattention`] with Theta's columns `scales` (slot, factor) multiplied after the normalisation
/// (interventions), also copying Theta [t×n] (the coefficients of the value tokens, scaled) into
/// `theta_out` when one is given.
pub fn pattention_scaled(
    x: &[f32],
    t: usize,
    p: &Pattention,
    activation: NormActivation,
    scales: &[(usize, f32)],
    out: &mut [f32],
    theta_out: Option<&mut [f32]>,
) {
    let (d_in, d_out) = (p.key_param_tokens.len() / p.n, p.d_out());
    let mut theta = vec![0f32; t * p.n];
    matmul_bt_weights(x, &p.key_param_tokens, t, d_in, p.n, &mut theta);
    let rows = parallel::chunk_len(t, 4, 1, 8);
    parallel::for_each(theta.chunks_mut(rows * p.n).collect(), |_, block| {
        block.chunks_exact_mut(p.n).for_each(|row| normalize_scores(row, activation));
    });
    scale_columns(&mut theta, p.n, scales);
    if let Some(dst) = theta_out {
        dst.copy_from_slice(&theta);
    }
    match p.values_transposed() {
        true => matmul_bt_weights(&theta, &p.value_param_tokens, t, p.n, d_out, out),
        false => matmul_weights(&theta, &p.value_param_tokens, t, p.n, d_out, out),
    }
}

impl Backend for CpuBackend {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.model.config.max_positions
    }

    fn position(&self) -> usize {
        self.len
    }

    fn reset(&mut self) {
        self.k_cache.iter_mut().chain(&mut self.v_cache).for_each(KvRows::clear);
        self.len = 0;
    }

    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        parallel::on_pool(|| self.forward_pass(ids, all_logits, None))
    }
}
