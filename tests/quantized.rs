//! Quantized weights (q8, q4) on the CPU against the float64 reference run on their dequantized
//! weights, on every norm variant; the Rust quantizer against the fixtures' independent one, byte
//! for byte; quantized files written and read back.

mod common;

use std::ops::ControlFlow;

use common::{cpu, expected, fixture_dir, load_as, max_abs_diff, QUANTIZED};
use tokenformer::convert::to_safetensors;
use tokenformer::generation::perplexity;
use tokenformer::inspect::dictionary;
use tokenformer::loader::{load_from_bytes, read};
use tokenformer::weights::{index, DType};
use tokenformer::{generate, Backend, Dtype, Projection, SamplingParams};

/// The f32 bound against the reference: the dequantized weights are exact f32 values, only the
/// order of the sums differs (each group's quants summed, then scaled; q4's minimum apart).
const LOGITS_TOLERANCE: f64 = 1e-4;

/// Each quantized fixture, kept as blocks (the quantized kernels) and widened to f32 as it loads
/// (the f32 kernels on the dequantized values): both are the reference's numbers.
#[test]
fn quantized_models_compute_the_reference_on_their_dequantized_weights() {
    for (variant, _, dtype) in QUANTIZED {
        let exp = expected(variant);
        for stored in [dtype, Dtype::F32] {
            let (model, tokenizer) = load_as(variant, stored);
            assert_eq!(model.dtype(), stored, "{variant}");
            let mut backend = cpu(model);
            let mut worst = 0f64;
            for case in &exp.cases {
                backend.reset();
                let logits = backend.forward(&case.ids, true).unwrap();
                let err = max_abs_diff(logits.iter().map(|&v| v as f64), case.logits.iter().flatten().copied());
                assert!(err < LOGITS_TOLERANCE, "{variant} as {stored}: max |error| {err:e}");
                worst = worst.max(err);
                let run = |b: &mut tokenformer::CpuBackend, params: &SamplingParams| {
                    generate(b, &case.ids, params, tokenizer.eos_id(), |_| ControlFlow::Continue(())).unwrap().ids
                };
                assert_eq!(run(&mut backend, &SamplingParams::greedy(32)), case.greedy, "{variant} as {stored}");
                for s in &case.sampled {
                    assert_eq!(run(&mut backend, &s.params), s.ids, "{variant} as {stored}: {:?}", s.params);
                }
            }
            eprintln!("{variant} as {stored}: max |logit - reference| {worst:.1e}");
            let eval = exp.eval.as_ref().expect("an eval section");
            let p = perplexity(&mut backend, &eval.ids, eval.window, eval.stride).unwrap();
            assert_eq!(p.tokens_scored, eval.tokens_scored);
            assert!((p.nll_mean - eval.nll_mean).abs() < 1e-5, "{variant}: {} vs {}", p.nll_mean, eval.nll_mean);
        }
    }
}

/// The f32 fixtures quantized as they load (the path every float checkpoint takes to q8 or q4)
/// and written by `convert` give exactly the bytes of the quantized fixtures, which
/// `tools/make_fixtures.py` writes with its own numpy quantizer: the rule, not just its error, is
/// shared.
#[test]
fn quantizing_on_load_gives_the_fixtures_bytes() {
    for (variant, original, dtype) in QUANTIZED {
        let (model, _) = load_as(original, dtype);
        assert_eq!((model.dtype(), model.embedding_dtype()), (dtype, Dtype::F16));
        let written = to_safetensors(&model).unwrap();
        let fixture = read(&fixture_dir(variant).join("model.safetensors")).unwrap();
        let (ours, theirs) = (tensors(&written), tensors(&fixture));
        assert_eq!(ours.len(), theirs.len(), "{variant}");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!((&a.0, a.1, &a.2), (&b.0, b.1, &b.2), "{variant}");
            let differ = a.3.iter().zip(&b.3).filter(|(x, y)| x != y).count();
            assert_eq!(differ, 0, "{variant}: {} differs in {differ} of {} bytes", a.0, a.3.len());
        }
        let quantized = ours.iter().filter(|t| t.1 == if dtype == Dtype::Q8 { DType::Q8 } else { DType::Q4 }).count();
        assert_eq!(quantized, 10 * model.config.num_layers, "{variant}: every parameter-token matrix");
    }
}

/// Every tensor of a safetensors file as (name, dtype, shape, bytes), by name.
fn tensors(file: &[u8]) -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
    let mut all: Vec<_> = index(&file)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.dtype, e.shape, file[e.range.start as usize..e.range.end as usize].to_vec()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A quantized folder converts to another dtype and back: q4 to f32 gives the dequantized values
/// (the same logits), q4 to q4 the same tensors, q4 to q8 a model within q8's error of the q4 one
/// (on these small random models q8 moves logits by about 0.3 from f32).
#[test]
fn quantized_files_convert_and_reload() {
    let dir = fixture_dir("l2_norm_gelu_q4");
    let files = [read(&dir.join("config.json")).unwrap(), read(&dir.join("tokenizer.json")).unwrap()];
    let bytes = read(&dir.join("model.safetensors")).unwrap();
    let reload = |weights: &[u8], dtype| load_from_bytes(&files[0], weights, &files[1], (dtype, None), &mut |_, _| {});
    let case = &expected("l2_norm_gelu_q4").cases[2];
    let logits = |m| cpu(m).forward(&case.ids, true).unwrap().into_iter().map(f64::from).collect::<Vec<_>>();
    let (q4, _) = reload(&bytes, Dtype::Q4).unwrap();
    assert_eq!(tensors(&to_safetensors(&q4).unwrap()), tensors(&bytes), "q4 kept as q4 is written back unchanged");
    let (widened, _) = reload(&bytes, Dtype::F32).unwrap();
    let f32_file = to_safetensors(&widened).unwrap();
    let (f32_model, _) = reload(&f32_file, Dtype::F32).unwrap();
    let err = max_abs_diff(logits(f32_model), logits(q4.clone()));
    assert!(err < LOGITS_TOLERANCE, "q4 -> f32 -> f32: {err:e}");
    let (q8, _) = reload(&bytes, Dtype::Q8).unwrap();
    let err = max_abs_diff(logits(q8), logits(q4));
    assert!(err > 0.0 && err < 1.0, "q4 -> q8: {err:e}");
}

/// The inspector's dictionary reads one slot's value out of every quantized row of Vᵀ: the values
/// the dequantized model holds, at the first, a middle and the last slot of every projection.
#[test]
fn a_quantized_slots_dictionary_is_the_dequantized_models() {
    for (variant, _, dtype) in QUANTIZED {
        let (quantized, _) = load_as(variant, dtype);
        let (widened, _) = load_as(variant, Dtype::F32);
        for layer in 0..quantized.blocks.len() {
            for proj in Projection::ALL {
                let n = quantized.blocks[layer].get(proj).n;
                for slot in [0, n / 2 + 1, n - 1] {
                    let got = dictionary(&quantized, layer, proj, slot).unwrap();
                    let want = dictionary(&widened, layer, proj, slot).unwrap();
                    let err = max_abs_diff(got.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
                    assert!(err < 1e-5, "{variant} layer {layer} {proj:?} slot {slot}: {err:e}");
                }
            }
        }
    }
}
