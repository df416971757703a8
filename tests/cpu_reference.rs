//! The CPU backend against the independent float64 reference, on every fixture model.

mod common;

use common::{cpu, expected, load, load_as, max_abs_diff, KV_F16_TOLERANCE, VARIANTS};
use tokenformer::generation::perplexity;
use tokenformer::{generate, Backend, Dtype, KvDtype, SamplingParams};

/// f32 compute against the float64 reference: the bound for every position's logits.
const LOGITS_TOLERANCE: f64 = 1e-4;

#[test]
fn logits_match_the_reference_at_every_position() {
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, tokenizer) = load(variant);
        assert_eq!(tokenizer.vocab_size(), exp.vocab_size, "{variant}");
        let mut backend = cpu(model);
        let mut worst = 0.0f64;
        for case in &exp.cases {
            if let Some(text) = &case.text {
                assert_eq!(tokenizer.encode(text).unwrap(), case.ids, "{variant}: tokenizer on {text:?}");
            }
            backend.reset();
            let logits = backend.forward(&case.ids, true).unwrap();
            assert_eq!(logits.len(), case.ids.len() * exp.vocab_size);
            let want = case.logits.iter().flatten().copied();
            let err = max_abs_diff(logits.iter().map(|&v| v as f64), want);
            assert!(err < LOGITS_TOLERANCE, "{variant} {:?}: max |error| {err:e}", case.ids);
            worst = worst.max(err);
        }
        eprintln!("{variant}: max |logit - float64 reference| {worst:.1e}");
    }
}

#[test]
fn greedy_and_seeded_sampling_match_the_reference() {
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, tokenizer) = load(variant);
        let eos = tokenizer.eos_id();
        let mut backend = cpu(model);
        for case in &exp.cases {
            let out = generate(&mut backend, &case.ids, &SamplingParams::greedy(32), eos, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(out.ids, case.greedy, "{variant} greedy after {:?}", case.ids);
            for s in &case.sampled {
                let params = &s.params;
                let out =
                    generate(&mut backend, &case.ids, params, eos, |_| std::ops::ControlFlow::Continue(())).unwrap();
                assert_eq!(out.ids, s.ids, "{variant} sampled {params:?} after {:?}", case.ids);
            }
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, _) = load(variant);
        let mut backend = cpu(model);
        let case = exp.cases.iter().max_by_key(|c| c.ids.len()).unwrap();
        let mut ids = case.ids.clone();
        ids.extend(&case.greedy);
        let vocab = exp.vocab_size;

        backend.reset();
        let full = backend.forward(&ids, true).unwrap();
        // Prefill half, then one token at a time.
        let split = ids.len() / 2;
        backend.reset();
        let mut stepwise = backend.forward(&ids[..split], true).unwrap();
        for &id in &ids[split..] {
            stepwise.extend(backend.forward(&[id], false).unwrap());
        }
        assert_eq!(backend.position(), ids.len());
        let err = max_abs_diff(full.iter().map(|&v| v as f64), stepwise.iter().map(|&v| v as f64));
        // Only summation order differs (blocked matmul for the prefill, dot products for single tokens).
        assert!(err < 5e-5, "{variant}: cached vs full max |error| {err:e} over {} positions", full.len() / vocab);
    }
}

#[test]
fn sliding_window_perplexity_matches_the_reference() {
    let exp = expected("l2_norm_gelu");
    let eval = exp.eval.expect("l2_norm_gelu/expected.json has an eval section");
    let (model, _) = load("l2_norm_gelu");
    let mut backend = cpu(model);
    let p = perplexity(&mut backend, &eval.ids, eval.window, eval.stride).unwrap();
    assert_eq!(p.tokens_scored, eval.tokens_scored);
    assert!((p.nll_mean - eval.nll_mean).abs() < 1e-5, "{} vs {}", p.nll_mean, eval.nll_mean);
    assert!((p.perplexity / eval.perplexity - 1.0).abs() < 1e-5);
}

/// The built-in model against the numbers its training script computed in PyTorch (float32 from
/// the shipped f16 weights) on the first 4,096 validation tokens: an independent check of the
/// whole CPU path on a real trained model.
#[test]
fn built_in_model_scores_its_validation_text_like_the_training_script() {
    let (model, tokenizer) = tokenformer::default_model::load((tokenformer::Dtype::F32, None)).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tokenformer-moby");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let want = results["grown_f16_first4096_nll_f32"].as_f64().unwrap();
    let text = std::fs::read_to_string(dir.join("validation.txt")).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    let mut backend = cpu(model);
    let p = perplexity(&mut backend, &ids[..4096], 256, 128).unwrap();
    assert!((p.nll_mean - want).abs() < 1e-4, "{} vs {want}", p.nll_mean);
}

/// f16 weights on the CPU compute exactly what f32 does on the same weights rounded to f16 (the
/// products widen each weight exactly and sum in the same order), so the f16 path inherits the f32
/// path's bound against the reference on those weights; against the f32 model's reference the
/// rounding alone moves logits by less than the GPU's f16 bound.
#[test]
fn f16_weights_compute_exactly_the_rounded_f32_model() {
    use tokenformer::Dtype;
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, tokenizer) = load(variant);
        let half = model.into_dtype(Dtype::F16, None).unwrap();
        assert_eq!(half.dtype(), Dtype::F16);
        let rounded = half.clone().into_dtype(Dtype::F32, None).unwrap();
        let (mut h, mut r) = (cpu(half), cpu(rounded));
        for case in &exp.cases {
            h.reset();
            r.reset();
            let (lh, lr) = (h.forward(&case.ids, true).unwrap(), r.forward(&case.ids, true).unwrap());
            assert!(lh.iter().zip(&lr).all(|(a, b)| a.to_bits() == b.to_bits()), "{variant}: f16 prefill logits");
            let (sh, sr) = (h.forward(&[1], false).unwrap(), r.forward(&[1], false).unwrap());
            assert!(sh.iter().zip(&sr).all(|(a, b)| a.to_bits() == b.to_bits()), "{variant}: f16 decode logits");
            let want = case.logits.iter().flatten().copied();
            let err = max_abs_diff(lh.iter().map(|&v| v as f64), want);
            assert!(err < 5e-2, "{variant}: f16 weights vs the f32 reference {err:e}");
            let sampled = SamplingParams { temperature: 0.9, top_k: 20, seed: 11, ..SamplingParams::greedy(24) };
            for params in [SamplingParams::greedy(24), sampled] {
                let run = |b: &mut tokenformer::CpuBackend| {
                    generate(b, &case.ids, &params, tokenizer.eos_id(), |_| std::ops::ControlFlow::Continue(()))
                        .unwrap()
                        .ids
                };
                assert_eq!(run(&mut h), run(&mut r), "{variant}: {params:?}");
            }
        }
    }
}

/// The CPU's f16 KV cache (an option; f32 is the default): each fixture, f32 and q4 weights,
/// prefilled then decoded past the prompt, within KV_F16_TOLERANCE of the f32 cache, as the GPU's.
#[test]
fn an_f16_kv_cache_stays_within_the_stated_tolerance() {
    for (variant, dtype) in VARIANTS.into_iter().map(|v| (v, Dtype::F32)).chain([("l2_norm_gelu_q4", Dtype::Q4)]) {
        let exp = expected(variant);
        let (model, _) = load_as(variant, dtype);
        let (mut full, mut half) = (cpu(model.clone()), cpu(model));
        assert_eq!(full.kv_dtype(), KvDtype::F32);
        half.set_kv_cache(KvDtype::F16);
        assert_eq!(half.kv_dtype(), KvDtype::F16);
        let mut worst = 0f64;
        for case in &exp.cases {
            let mut ids = case.ids.clone();
            ids.extend(&case.greedy[..8]);
            let split = case.ids.len();
            for backend in [&mut full, &mut half] {
                backend.reset();
            }
            let (a, b) = (full.forward(&ids[..split], true).unwrap(), half.forward(&ids[..split], true).unwrap());
            worst = worst.max(max_abs_diff(a.iter().map(|&v| v as f64), b.iter().map(|&v| v as f64)));
            for &id in &ids[split..] {
                let (a, b) = (full.forward(&[id], false).unwrap(), half.forward(&[id], false).unwrap());
                worst = worst.max(max_abs_diff(a.iter().map(|&v| v as f64), b.iter().map(|&v| v as f64)));
            }
        }
        eprintln!("{variant} as {dtype}: f16 KV cache vs f32 on the CPU, max |logit difference| {worst:.2e}");
        assert!(worst > 0.0 && worst < KV_F16_TOLERANCE, "{variant}: {worst:e}");
    }
}
