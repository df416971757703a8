//! The same model from every accepted file and naming scheme gives the same logits, and every
//! malformed model gives a specific error.

mod common;

use common::{cpu, expected, fixture_dir, load, max_abs_diff};
use tokenformer::loader::{load_from_bytes, read};
use tokenformer::weights::safetensors::{write, Stored};
use tokenformer::weights::{Naming, TensorRole};
use tokenformer::{Backend, Dtype, Error, Model};

/// f16 weights against f32 weights: logits max |difference| (measured 1.7e-2 on l2_norm_gelu, whose
/// logits reach 12.8; f16 keeps 11 significant bits).
const F16_TOLERANCE: f64 = 5e-2;

struct Files {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
}

fn authors_files() -> Files {
    let dir = fixture_dir("l2_norm_gelu");
    Files { config: read(&dir.join("config.json")).unwrap(), tokenizer: read(&dir.join("tokenizer.json")).unwrap() }
}

fn logits_of(model: Model, ids: &[u32]) -> Vec<f64> {
    cpu(model).forward(ids, true).unwrap().into_iter().map(f64::from).collect()
}

fn load_weights(files: &Files, weights: &[u8]) -> Result<Model, Error> {
    load_from_bytes(&files.config, weights, &files.tokenizer, (Dtype::F32, None), &mut |_, _| {}).map(|(m, _)| m)
}

/// The reference model's tensors under the given naming, as (name, shape, data).
fn named_tensors(model: &Model, naming: Naming) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let layers = model.config.num_layers;
    TensorRole::all(layers)
        .into_iter()
        .zip(model.tensors())
        .map(|(role, (_, shape, data))| (role.name(naming, layers), shape, data.to_vec()))
        .collect()
}

fn safetensors_of(tensors: &[(String, Vec<usize>, Vec<f32>)], f16: bool) -> Vec<u8> {
    write(tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), if f16 { Stored::F16(d) } else { Stored::F32(d) })))
        .unwrap()
}

#[test]
fn pytorch_bin_safetensors_and_both_namings_agree() {
    let files = authors_files();
    let ids = &expected("l2_norm_gelu").cases.last().unwrap().ids.clone();
    let (from_bin, _) = load("l2_norm_gelu");
    let reference = logits_of(from_bin.clone(), ids);

    for naming in [Naming::Project, Naming::Authors] {
        let tensors = named_tensors(&from_bin, naming);
        let f32_file = safetensors_of(&tensors, false);
        let logits = logits_of(load_weights(&files, &f32_file).unwrap(), ids);
        assert_eq!(logits, reference, "f32 safetensors, {naming:?} names: must be bit-identical");

        let f16_file = safetensors_of(&tensors, true);
        let logits = logits_of(load_weights(&files, &f16_file).unwrap(), ids);
        let err = max_abs_diff(logits, reference.iter().copied());
        assert!(err < F16_TOLERANCE, "f16 safetensors, {naming:?} names: max |error| {err:e}");
        assert!(err > 0.0, "f16 rounding must show up; the test would not see a dtype mix-up otherwise");
    }
}

#[test]
fn tensor_problems_are_named() {
    let files = authors_files();
    let (model, _) = load("l2_norm_gelu");
    let good = named_tensors(&model, Naming::Authors);
    let check = |tensors: Vec<(String, Vec<usize>, Vec<f32>)>, want: &str| {
        let err = load_weights(&files, &safetensors_of(&tensors, false)).unwrap_err();
        assert!(err.to_string().contains(want), "expected {want:?}, got: {err}");
    };

    let mut missing = good.clone();
    missing.retain(|(n, _, _)| n != "sequential.3.mlp.value_param_tokens");
    check(missing, "missing tensor sequential.3.mlp.value_param_tokens");

    let mut extra = good.clone();
    extra.push(("sequential.1.extra.weight".into(), vec![2], vec![0.0; 2]));
    check(extra, "unexpected tensor sequential.1.extra.weight");

    let mut wrong_shape = good.clone();
    let t = wrong_shape.iter_mut().find(|(n, _, _)| n == "sequential.2.attention.key.key_param_tokens").unwrap();
    t.1 = vec![t.1[1], t.1[0]];
    check(wrong_shape, "sequential.2.attention.key.key_param_tokens has shape");

    let mut mixed = good.clone();
    mixed[3].0 = "blocks.0.query.key_param_tokens".into();
    check(mixed, "mix the authors' names");

    let mut nan = good.clone();
    nan[0].2[5] = f32::NAN;
    check(nan, "non-finite");

    // Fewer embedding rows than the tokenizer has ids.
    let mut short_embedding = good.clone();
    let d = model.config.hidden_size;
    short_embedding[0].1 = vec![10, d];
    short_embedding[0].2.truncate(10 * d);
    check(short_embedding, "embedding has only 10 rows");
}

#[test]
fn broken_companion_files_are_named() {
    let files = authors_files();
    let weights = read(&fixture_dir("l2_norm_gelu").join("pytorch_model.bin")).unwrap();
    let err = load_from_bytes(b"{\"num_layers\": 3", &weights, &files.tokenizer, (Dtype::F32, None), &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, Error::ConfigJson(_)), "{err}");
    let err =
        load_from_bytes(&files.config, &weights, b"{\"model\": 42}", (Dtype::F32, None), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::Tokenizer(_)), "{err}");
    for (bytes, what) in [(&b""[..], "empty"), (&b"\x00\x01garbage bytes here"[..], "neither")] {
        let err = load_weights(&files, bytes).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
    // A config whose shape disagrees with the weights: the first mismatching tensor is named.
    let mut cfg: serde_json::Value = serde_json::from_slice(&files.config).unwrap();
    cfg["qkv_slot_num"] = serde_json::json!(36);
    let err =
        load_from_bytes(cfg.to_string().as_bytes(), &weights, &files.tokenizer, (Dtype::F32, None), &mut |_, _| {})
            .unwrap_err();
    assert!(err.to_string().contains("sequential.2.attention.query.key_param_tokens has shape"), "{err}");
}

#[test]
fn padded_embedding_rows_are_never_scored() {
    let (mut model, tokenizer) = load("l2_norm_gelu");
    let (d, vocab) = (model.config.hidden_size, model.vocab_size);
    assert!(model.embedding_rows > vocab, "the fixture must have padding rows for this test to mean anything");
    // Make every padding row a huge copy of a real row: if the head scored them, they would win every argmax.
    let tokenformer::WeightData::F32(embedding) = &mut model.embedding else { panic!("loaded as f32") };
    for row in vocab..model.embedding_rows {
        let (real, pad) = embedding.split_at_mut(row * d);
        pad[..d].iter_mut().zip(&real[7 * d..8 * d]).for_each(|(p, r)| *p = r * 1e3);
    }
    let mut backend = cpu(model);
    let logits = backend.forward(&[3, 4, 5], true).unwrap();
    assert_eq!(logits.len(), 3 * vocab);
    let params = tokenformer::SamplingParams { temperature: 1.5, seed: 3, ..tokenformer::SamplingParams::greedy(40) };
    let out = tokenformer::generate(&mut backend, &[3, 4, 5], &params, tokenizer.eos_id(), |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert!(out.ids.iter().all(|&id| (id as usize) < vocab), "{:?}", out.ids);
}
