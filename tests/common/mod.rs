//! Shared helpers for the integration tests: fixture folders written by `tools/make_fixtures.py`
//! from the independent float64 reference (`tools/reference.py`).
#![allow(dead_code)] // each test crate uses a different subset

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokenformer::loader::ModelPaths;
use tokenformer::{CpuBackend, Dtype, Model, SamplingParams, Tokenizer};

/// Every model fixture, one per norm_activation_type, plus bf16 safetensors in the project's layout.
pub const VARIANTS: [&str; 4] = ["l2_norm_gelu", "gelu_l2_norm", "softmax", "l2_norm_gelu_bf16"];

/// The three norm variants' weights quantized (`tools/make_fixtures.py`, its own quantizer), their
/// expected numbers the reference's on the dequantized weights: (folder, the f32 original, dtype).
pub const QUANTIZED: [(&str, &str, Dtype); 6] = [
    ("l2_norm_gelu_q8", "l2_norm_gelu", Dtype::Q8),
    ("l2_norm_gelu_q4", "l2_norm_gelu", Dtype::Q4),
    ("gelu_l2_norm_q8", "gelu_l2_norm", Dtype::Q8),
    ("gelu_l2_norm_q4", "gelu_l2_norm", Dtype::Q4),
    ("softmax_q8", "softmax", Dtype::Q8),
    ("softmax_q4", "softmax", Dtype::Q4),
];

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub vocab_size: usize,
    pub cases: Vec<Case>,
    pub eval: Option<Eval>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub text: Option<String>,
    pub ids: Vec<u32>,
    pub logits: Vec<Vec<f64>>,
    pub greedy: Vec<u32>,
    pub sampled: Vec<Sampled>,
}

#[derive(Debug, Deserialize)]
pub struct Sampled {
    #[serde(flatten)]
    pub params: SamplingParams,
    pub ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Eval {
    pub ids: Vec<u32>,
    pub window: usize,
    pub stride: usize,
    pub tokens_scored: usize,
    pub nll_mean: f64,
    pub perplexity: f64,
}

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn expected(name: &str) -> Expected {
    let path = fixture_dir(name).join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn load(name: &str) -> (Model, Tokenizer) {
    load_as(name, Dtype::F32)
}

/// A fixture with its parameter tokens stored in `dtype` (the embedding as that dtype's default).
pub fn load_as(name: &str, dtype: Dtype) -> (Model, Tokenizer) {
    let paths = ModelPaths::resolve(&fixture_dir(name), None, None).unwrap();
    paths.load((dtype, None), &mut |_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// How far an f16 KV cache may move the fixtures' logits from an f32 one, on either backend: keys
/// and values rounded to 11 significant bits (measured 4e-3 to 1.2e-2; the logits reach 12).
#[allow(dead_code)]
pub const KV_F16_TOLERANCE: f64 = 2e-2;

pub fn cpu(model: Model) -> CpuBackend {
    CpuBackend::new(Arc::new(model))
}

/// Largest |a - b| over two equally long sequences.
pub fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// `tests/fixtures/inspect.json`: the float64 reference's Theta rows and attention probabilities.
#[derive(Debug, Deserialize)]
pub struct InspectFixture {
    pub text: String,
    pub models: Vec<InspectModel>,
}

#[derive(Debug, Deserialize)]
pub struct InspectModel {
    /// Fixture folder name.
    pub model: String,
    /// `text` encoded by the folder's tokenizer.
    pub ids: Vec<u32>,
    pub layers: Vec<InspectLayer>,
}

#[derive(Debug, Deserialize)]
pub struct InspectLayer {
    pub layer: usize,
    /// Projection name -> Theta [tokens][slots].
    pub theta: std::collections::BTreeMap<String, Vec<Vec<f64>>>,
    /// [heads][tokens][tokens], present for layer 0.
    pub attention: Option<Vec<Vec<Vec<f64>>>>,
}

pub fn inspect_fixture() -> InspectFixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inspect.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference's `k` largest values of a row, largest first (values only: near-ties may swap slots
/// between f32 and f64, but the values stay within tolerance).
pub fn top_values(row: &[f64], k: usize) -> Vec<f64> {
    let mut v = row.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    v.truncate(k);
    v
}

/// `tests/fixtures/actions.json`: the float64 reference under interventions, search scores and the
/// logit lens, for every model folder.
#[derive(Debug, Deserialize)]
pub struct ActionsFixture {
    pub text: String,
    pub lens_top: usize,
    pub models: Vec<ActionsModel>,
}

#[derive(Debug, Deserialize)]
pub struct ActionsModel {
    pub model: String,
    pub ids: Vec<u32>,
    /// [layer, proj, slot, factor]
    pub interventions: Vec<(usize, String, usize, f32)>,
    /// Every position's logits under the interventions.
    pub logits: Vec<Vec<f64>>,
    /// "LAYER:ffn" -> Theta [tokens][slots] under the interventions.
    pub theta: std::collections::BTreeMap<String, Vec<Vec<f64>>>,
    /// Greedy tokens under the interventions (absent when a step is within the margin of a tie).
    pub greedy: Option<Vec<u32>>,
    pub eval: ActionsEval,
    pub search: ActionsSearch,
    /// [layer][token][rank] = (id, probability), no interventions.
    pub lens: Vec<Vec<Vec<(u32, f64)>>>,
}

#[derive(Debug, Deserialize)]
pub struct ActionsEval {
    pub ids: Vec<u32>,
    pub window: usize,
    pub stride: usize,
    pub tokens_scored: usize,
    pub nll_mean: f64,
}

#[derive(Debug, Deserialize)]
pub struct ActionsSearch {
    pub token: u32,
    pub scores: Vec<f64>,
}

pub fn actions_fixture() -> ActionsFixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/actions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's interventions for `model`.
pub fn fixture_interventions(entry: &ActionsModel, model: &tokenformer::Model) -> tokenformer::Interventions {
    let list = entry.interventions.iter().map(|(layer, proj, slot, factor)| tokenformer::Intervention {
        layer: *layer,
        proj: tokenformer::Projection::parse(proj).unwrap(),
        slot: *slot,
        factor: *factor,
    });
    tokenformer::Interventions::new(list, &model.config).unwrap()
}
