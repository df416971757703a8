//! The GPU backend against the CPU backend (and the float64 reference) on every fixture model.
//! Natively this needs a Vulkan adapter (lavapipe in CI): without one these tests fail.
#![cfg(feature = "gpu")]

mod common;

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use common::{cpu, expected, fixture_dir, load, max_abs_diff, KV_F16_TOLERANCE, VARIANTS};
use tokenformer::gpu::GpuLoader;
use tokenformer::gpu::{GpuBackend, GpuContext, GpuOptions, KvDtype};
use tokenformer::loader::ModelPaths;
use tokenformer::weights::stream::WeightStream;
use tokenformer::{generate, Backend, Dtype, InspectRequest, Interventions, Model, Projection, SamplingParams};

/// f32 on the device against f32 on the CPU: different summation orders and an erf approximation.
const LOGITS_TOLERANCE: f64 = 1e-3;
/// f16 weights against the CPU running the same f16-rounded weights: only compute differs.
const F16_SAME_WEIGHTS_TOLERANCE: f64 = 1e-3;
/// f16 weights against the original f32 model: weight rounding (relative 2^-11) shows in the logits.
const F16_TOLERANCE: f64 = 5e-2;
fn context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        pollster::block_on(GpuContext::new()).unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"))
    })
    .clone()
}

fn gpu(model: &Model, options: &GpuOptions) -> GpuBackend {
    pollster::block_on(GpuBackend::new(context(), model, options)).unwrap_or_else(|e| panic!("{e}"))
}

fn logits(backend: &mut dyn Backend, ids: &[u32]) -> Vec<f64> {
    backend.reset();
    backend.forward(ids, true).unwrap().into_iter().map(f64::from).collect()
}

/// Asserts a GPU's logits for `case` (kernel shapes `shapes`) within LOGITS_TOLERANCE of the
/// CPU's, `want`, and of the reference; returns the error against the reference.
fn check_logits(variant: &str, shapes: bool, case: &common::Case, got: Vec<f64>, want: &[f64]) -> f64 {
    let ids = &case.ids;
    let err = max_abs_diff(got.iter().copied(), want.iter().copied());
    assert!(err < LOGITS_TOLERANCE, "{variant} gpu shapes {shapes} {ids:?}: max |GPU - CPU| {err:e}");
    let err = max_abs_diff(got, case.logits.iter().flatten().copied());
    assert!(err < LOGITS_TOLERANCE, "{variant} gpu shapes {shapes} {ids:?}: max |GPU - reference| {err:e}");
    err
}

#[test]
fn logits_match_the_cpu_at_every_position() {
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, _) = load(variant);
        // A CPU adapter's kernels (lavapipe's default: prefill in registers) and a GPU's (prefill in
        // workgroup-memory tiles).
        let mut gpus = [false, true].map(|s| gpu(&model, &GpuOptions { gpu_shapes: Some(s), ..Default::default() }));
        let mut c = cpu(model);
        let mut worst = [0.0f64; 2];
        for case in &exp.cases {
            let want = logits(&mut c, &case.ids);
            for ((g, shapes), worst) in gpus.iter_mut().zip([false, true]).zip(&mut worst) {
                *worst = worst.max(check_logits(variant, shapes, case, logits(g, &case.ids), &want));
            }
        }
        eprintln!(
            "{variant}: max |logit - float64 reference| {:.1e} (a CPU adapter's kernels), {:.1e} (a GPU's)",
            worst[0], worst[1]
        );
    }
}

/// The browser's path: the GPU backend built from the weights file as a stream (arriving in odd
/// pieces that split rows, as a download does) equals the one built from the model in memory, bit
/// for bit, in both file formats (and in buffers small enough to force chunked matrices).
#[test]
fn uploading_from_the_file_tensor_by_tensor_equals_uploading_the_model() {
    for variant in VARIANTS {
        let dir = fixture_dir(variant);
        let paths = ModelPaths::resolve(&dir, None, None).unwrap();
        let bytes = std::fs::read(&paths.weights).unwrap();
        let (model, tokenizer) = load(variant);
        let options = GpuOptions { max_chunk_bytes: Some(16384), ..GpuOptions::default() };
        let mut from_model = gpu(&model, &options);
        let mut loader =
            pollster::block_on(GpuLoader::new(context(), model.config.clone(), tokenizer.vocab_size(), &options))
                .unwrap();
        let mut stream = WeightStream::new(None);
        for piece in bytes.chunks(4093) {
            stream.push(piece, &mut loader).unwrap_or_else(|e| panic!("{variant}: {e}"));
        }
        stream.finish().unwrap_or_else(|e| panic!("{variant}: {e}"));
        let mut from_stream = pollster::block_on(loader.finish()).unwrap_or_else(|e| panic!("{e}"));
        let mut from_file = pollster::block_on(GpuBackend::from_file(
            context(),
            model.config.clone(),
            tokenizer.vocab_size(),
            &bytes,
            &options,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        for case in &expected(variant).cases {
            let reference = logits(&mut from_model, &case.ids);
            assert_eq!(logits(&mut from_stream, &case.ids), reference, "{variant}");
            assert_eq!(logits(&mut from_file, &case.ids), reference, "{variant}");
        }
    }
}

#[test]
fn greedy_and_seeded_sampling_give_the_cpu_tokens() {
    let run = |backend: &mut dyn Backend, prompt: &[u32], params: &SamplingParams, eos| {
        generate(backend, prompt, params, eos, |_| ControlFlow::Continue(())).unwrap().ids
    };
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, tokenizer) = load(variant);
        let eos = tokenizer.eos_id();
        let mut g = gpu(&model, &GpuOptions::default());
        for case in &exp.cases {
            let greedy = SamplingParams::greedy(32);
            assert_eq!(run(&mut g, &case.ids, &greedy, eos), case.greedy, "{variant} greedy after {:?}", case.ids);
            for s in &case.sampled {
                let got = run(&mut g, &case.ids, &s.params, eos);
                assert_eq!(got, s.ids, "{variant} sampled {:?} after {:?}", s.params, case.ids);
            }
        }
    }
}

#[test]
fn a_real_gpus_launch_shapes_give_the_same_tokens() {
    // lavapipe is a CPU adapter, so by default it launches the fewest workgroups, prefills in
    // registers and samples in one workgroup; here the decode products launch at least
    // MIN_WORKGROUPS each (splitting slots and rows), prefill runs in workgroup-memory tiles and
    // top-k sampling from candidates sorted in many workgroups, as on a GPU.
    let options = GpuOptions {
        min_workgroups: Some(tokenformer::gpu::MIN_WORKGROUPS),
        gpu_shapes: Some(true),
        ..Default::default()
    };
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, tokenizer) = load(variant);
        let mut g = gpu(&model, &options);
        for case in &exp.cases {
            let run = |g: &mut GpuBackend, params: &SamplingParams| {
                generate(g, &case.ids, params, tokenizer.eos_id(), |_| ControlFlow::Continue(())).unwrap().ids
            };
            assert_eq!(run(&mut g, &SamplingParams::greedy(32)), case.greedy, "{variant} greedy");
            for s in &case.sampled {
                assert_eq!(run(&mut g, &s.params), s.ids, "{variant} sampled {:?}", s.params);
            }
        }
        let kinds = g.last_pass().kinds;
        let products = kinds.iter().filter(|k| k.name.ends_with("scores") || k.name.ends_with("values"));
        assert_eq!(products.count(), 6, "{variant}: {kinds:?}");
    }
}

#[test]
fn a_step_submitted_ahead_is_used_or_discarded_without_a_trace() {
    // After a sampled token the GPU backend has already submitted the next step (fed that token on
    // the device); any other call than the one it anticipated must see a cache without it.
    let (model, _) = load("l2_norm_gelu");
    let mut g = gpu(&model, &GpuOptions::default());
    let mut c = cpu(model);
    let params = SamplingParams { temperature: 0.8, seed: 3, max_tokens: 8, ..Default::default() };
    for b in [&mut g as &mut dyn Backend, &mut c] {
        b.reset();
        b.forward(&[3, 4, 5], false).unwrap();
    }
    let first = g.next_token(&[6], &[3, 4, 5, 6], &params, 0).unwrap();
    assert_eq!(first, c.next_token(&[6], &[3, 4, 5, 6], &params, 0).unwrap());
    assert_eq!(g.position(), 4, "the step ahead is not counted");
    // Fed something else than the sampled id: the step ahead is discarded.
    let other = (first + 1) % 300;
    let err = max_abs_diff(
        g.forward(&[other], true).unwrap().into_iter().map(f64::from),
        c.forward(&[other], true).unwrap().into_iter().map(f64::from),
    );
    assert!(err < LOGITS_TOLERANCE, "after a discarded step: {err:e}");
    // The anticipated call takes the step ahead; the tokens stay the CPU's, step after step.
    let mut context = vec![3, 4, 5, 6, other];
    let mut feed = other;
    for step in 1..6 {
        let want = c.next_token(&[feed], &context, &params, step).unwrap();
        assert_eq!(g.next_token(&[feed], &context, &params, step).unwrap(), want, "step {step}");
        context.push(want);
        feed = want;
    }
}

#[test]
fn with_a_repetition_penalty_steps_are_still_decoded_ahead() {
    // The sampler marks its pick as penalised on the device, so the step ahead needs nothing from
    // the CPU; a call with another context discards it.
    let (model, _) = load("l2_norm_gelu");
    let mut g = gpu(&model, &GpuOptions::default());
    let mut c = cpu(model);
    let params = SamplingParams {
        temperature: 0.9,
        top_k: 20,
        repetition_penalty: 1.6,
        seed: 4,
        max_tokens: 16,
        ..Default::default()
    };
    let mut context = vec![3, 4, 5, 3];
    let mut feed = context.clone();
    for step in 0..10 {
        // From step 6 the context also holds an id the step ahead did not penalise.
        if step == 6 {
            context.push(11);
        }
        let want = c.next_token(&feed, &context, &params, step).unwrap();
        assert_eq!(g.next_token(&feed, &context, &params, step).unwrap(), want, "step {step}");
        assert!(g.decoding_ahead(), "step {step} submitted the next one");
        context.push(want);
        feed = vec![want];
    }
}

#[test]
fn one_decoded_token_is_one_submission() {
    let (model, _) = load("l2_norm_gelu");
    let layers = model.config.num_layers as u32;
    // A CPU adapter's shapes on any adapter: a real GPU's default walks the vocabulary without top-k.
    let mut g = gpu(&model, &GpuOptions { gpu_shapes: Some(false), ..Default::default() });
    g.forward(&[3, 4, 5], false).unwrap();
    g.next_token(&[6], &[3, 4, 5, 6], &SamplingParams { temperature: 0.9, seed: 1, ..Default::default() }, 0).unwrap();
    let stats = g.last_pass();
    assert_eq!(stats.submissions, 1);
    // Embedding, 7 per block (fused Pattentions, layer norms and RoPE folded in), head (with the
    // final norm), the sampler's two passes.
    assert_eq!(stats.per_block, 7);
    assert_eq!(stats.dispatches, 1 + 7 * layers + 3);
    let kinds: Vec<(&str, u32)> = stats.kinds.iter().map(|k| (k.name, k.dispatches)).collect();
    let per_layer = ["qkv scores", "qkv values", "attention", "proj scores", "proj values", "ffn scores", "ffn values"];
    let mut want = vec![("embed", 1)];
    want.extend(per_layer.map(|k| (k, layers)));
    want.extend([("head", 1), ("sampler chunks", 1), ("sampler", 1)]);
    assert_eq!(kinds, want);
    // A prompt takes the general path: 13 dispatches per block.
    g.forward(&[7, 8], false).unwrap();
    assert_eq!(g.last_pass().per_block, 13);
}

/// `bench`'s timed step: every decode dispatch gets a device time, and the KV cache and the next
/// tokens (greedy and sampled) are as if the step had not run.
#[test]
fn a_timed_step_times_every_dispatch_and_changes_nothing() {
    let (model, _) = load("l2_norm_gelu");
    let greedy = SamplingParams::greedy(8);
    // As on a GPU, sampling with no top-k list walks the vocabulary over many workgroups.
    let options = GpuOptions { gpu_shapes: Some(true), ..Default::default() };
    let sampled =
        SamplingParams { temperature: 0.8, top_k: 0, top_p: 0.9, repetition_penalty: 1.3, seed: 2, max_tokens: 8 };
    let mut plain = gpu(&model, &options);
    let mut timed = gpu(&model, &options);
    for g in [&mut plain, &mut timed] {
        g.forward(&[3, 4, 5], false).unwrap();
    }
    let stats = pollster::block_on(timed.profile_decode_step(&sampled)).unwrap();
    assert_eq!(timed.position(), 3);
    let sampler: u32 = stats.kinds.iter().filter(|k| k.name.starts_with("sampler")).map(|k| k.dispatches).sum();
    assert!(stats.kinds.iter().any(|k| k.name == "sampler walk"), "{:?}", stats.kinds);
    assert_eq!(stats.dispatches - sampler, 1 + 7 * model.config.num_layers as u32 + 1);
    for k in &stats.kinds {
        assert!(k.gpu_ns.is_some_and(|ns| ns > 0), "{k:?}");
    }
    let products = stats.kinds.iter().filter(|k| k.weight_bytes > 0).count();
    assert_eq!(products, 7, "{:?}", stats.kinds);
    let next = |g: &mut GpuBackend, params| g.next_token(&[6], &[3, 4, 5, 6], params, 0).unwrap();
    assert_eq!(next(&mut timed, &greedy), next(&mut plain, &greedy));
    assert_eq!(next(&mut timed, &sampled), next(&mut plain, &sampled));
}

#[test]
fn a_timed_prefill_times_every_dispatch_and_changes_nothing() {
    let (model, _) = load("l2_norm_gelu");
    let options = GpuOptions { gpu_shapes: Some(true), ..Default::default() };
    let mut plain = gpu(&model, &options);
    let mut timed = gpu(&model, &options);
    for g in [&mut plain, &mut timed] {
        g.forward(&[3, 4], false).unwrap();
    }
    // Other ids than the prefill after it: cache rows the profile left behind would show.
    let stats = pollster::block_on(timed.profile_prefill(&[10, 11, 12])).unwrap();
    assert_eq!(timed.position(), 2);
    for k in &stats.kinds {
        assert!(k.gpu_ns.is_some_and(|ns| ns > 0), "{k:?}");
    }
    // The dispatches of the same prefill untimed, and the cache as if it had not run.
    let want = plain.forward(&[7, 8, 9], false).unwrap();
    assert_eq!(stats.dispatches, plain.last_pass().dispatches);
    assert_eq!(timed.forward(&[7, 8, 9], false).unwrap(), want);
    let long = vec![1; tokenformer::gpu::PREFILL_CHUNK + 1];
    let err = pollster::block_on(timed.profile_prefill(&long)).unwrap_err().to_string();
    assert!(err.contains("a timed prefill takes at most"), "{err}");
}

#[test]
fn decoding_with_the_cache_equals_recomputation_past_a_prefill_chunk() {
    // Longer than the backend's prefill chunk: the prompt runs in several submissions.
    let (mut model, _) = load("gelu_l2_norm");
    model.config.max_positions = 300;
    let vocab = model.vocab_size as u32;
    let ids: Vec<u32> = (0..290u32).map(|i| tokenformer::sampling::pcg_hash(i) % vocab).collect();
    let mut g = gpu(&model, &GpuOptions::default());
    let mut c = cpu(model);
    // Sampling after a long prompt: its first chunks only fill the cache.
    let params =
        SamplingParams { temperature: 0.9, top_k: 30, top_p: 0.9, repetition_penalty: 1.2, seed: 5, max_tokens: 8 };
    let run = |b: &mut dyn Backend| generate(b, &ids, &params, None, |_| ControlFlow::Continue(())).unwrap().ids;
    assert_eq!(run(&mut g), run(&mut c));
    let full = logits(&mut g, &ids);
    let err = max_abs_diff(full.iter().copied(), logits(&mut c, &ids));
    assert!(err < LOGITS_TOLERANCE, "290 tokens: max |GPU - CPU| {err:e}");
    g.reset();
    let mut stepwise: Vec<f64> = g.forward(&ids[..150], true).unwrap().into_iter().map(f64::from).collect();
    for &id in &ids[150..] {
        stepwise.extend(g.forward(&[id], true).unwrap().into_iter().map(f64::from));
    }
    let err = max_abs_diff(stepwise, full);
    assert!(err < 1e-4, "stepwise vs full: {err:e}");
}

#[test]
fn weights_split_into_chunks_give_the_same_logits() {
    // An 8 KiB limit splits every matrix but the smallest (and the embedding) into several buffers.
    let (model, _) = load("softmax");
    let ids = [5u32, 9, 200, 31, 7];
    let whole = logits(&mut gpu(&model, &GpuOptions::default()), &ids);
    let options = GpuOptions { max_chunk_bytes: Some(8192), ..Default::default() };
    let mut split = gpu(&model, &options);
    let err = max_abs_diff(logits(&mut split, &ids), whole);
    assert!(err < 1e-5, "chunked vs whole: {err:e}");
    split.forward(&[1], false).unwrap();
    assert!(split.last_pass().dispatches > 1 + 13 * model.config.num_layers as u32 + 2);
}

#[test]
fn f16_weights_stay_within_the_stated_tolerance() {
    // The weights' own rounding, with the exact (f32) KV cache.
    let f16 = GpuOptions { dtype: Dtype::F16, kv_cache: Some(KvDtype::F32), ..Default::default() };
    for variant in VARIANTS {
        let exp = expected(variant);
        let (model, _) = load(variant);
        let mut g = gpu(&model, &f16);
        let mut c = cpu(model.clone());
        let mut c16 = cpu(round_to_f16(model));
        for case in &exp.cases {
            let got = logits(&mut g, &case.ids);
            let err = max_abs_diff(got.iter().copied(), logits(&mut c16, &case.ids));
            assert!(err < F16_SAME_WEIGHTS_TOLERANCE, "{variant}: f16 GPU vs CPU on f16 weights {err:e}");
            let err = max_abs_diff(got, logits(&mut c, &case.ids));
            assert!(err < F16_TOLERANCE, "{variant}: f16 GPU vs f32 CPU {err:e}");
        }
    }
}

/// Quantized weights (q8, q4) on the device: the quantized fixtures, kept as blocks by both
/// backends, in a CPU adapter's and a GPU's kernel shapes, against the CPU on the same blocks and
/// the reference on their dequantized weights (1e-3), with the reference's greedy and seeded tokens.
#[test]
fn quantized_weights_match_the_cpu_and_the_reference() {
    let run = |backend: &mut dyn Backend, prompt: &[u32], params: &SamplingParams, eos| {
        generate(backend, prompt, params, eos, |_| ControlFlow::Continue(())).unwrap().ids
    };
    for (variant, _, dtype) in common::QUANTIZED {
        let exp = expected(variant);
        let (model, tokenizer) = common::load_as(variant, dtype);
        // The quantized weights' path with the exact (f32) KV cache; the f16 cache is checked below.
        let options = |s| GpuOptions { dtype, gpu_shapes: Some(s), kv_cache: Some(KvDtype::F32), ..Default::default() };
        let mut gpus = [false, true].map(|s| gpu(&model, &options(s)));
        let mut c = cpu(model);
        let mut worst = [0f64; 2];
        for case in &exp.cases {
            let want = logits(&mut c, &case.ids);
            for ((g, shapes), worst) in gpus.iter_mut().zip([false, true]).zip(&mut worst) {
                *worst = worst.max(check_logits(variant, shapes, case, logits(g, &case.ids), &want));
                let eos = tokenizer.eos_id();
                assert_eq!(run(g, &case.ids, &SamplingParams::greedy(32), eos), case.greedy, "{variant} greedy");
                for s in &case.sampled {
                    assert_eq!(run(g, &case.ids, &s.params, eos), s.ids, "{variant} {:?}", s.params);
                }
            }
        }
        let [cpu_shapes, gpu_shapes] = worst;
        eprintln!(
            "{variant}: max |logit - reference| {cpu_shapes:.1e} (a CPU adapter's kernels), {gpu_shapes:.1e} (a GPU's)"
        );
    }
}

/// The f16 KV cache (the default with f16 and quantized weights): each fixture, on f32 and on q4
/// weights, in both kernel shapes, against the same backend with an f32 cache: keys and values
/// rounded to 11 significant bits move the logits by at most KV_F16_TOLERANCE (measured: 4e-3 to
/// 1.2e-2 on the fixtures, whose logits reach 12).
#[test]
fn an_f16_kv_cache_stays_within_the_stated_tolerance() {
    for (variant, dtype) in VARIANTS.into_iter().map(|v| (v, Dtype::F32)).chain([("l2_norm_gelu_q4", Dtype::Q4)]) {
        let exp = expected(variant);
        let (model, _) = common::load_as(variant, dtype);
        for shapes in [false, true] {
            let options = |kv| GpuOptions { dtype, kv_cache: Some(kv), gpu_shapes: Some(shapes), ..Default::default() };
            let mut half = gpu(&model, &options(KvDtype::F16));
            let mut full = gpu(&model, &options(KvDtype::F32));
            assert_eq!(half.kv_dtype(), KvDtype::F16);
            let mut worst = 0f64;
            for case in &exp.cases {
                // Prefill, then decoding past it (the new positions append to the f16 cache).
                let mut ids = case.ids.clone();
                ids.extend(&case.greedy[..8]);
                let err = max_abs_diff(logits(&mut half, &ids), logits(&mut full, &ids));
                let (h, f) = (half.forward(&[3], false).unwrap(), full.forward(&[3], false).unwrap());
                let step = max_abs_diff(h.iter().map(|&v| v as f64), f.iter().map(|&v| v as f64));
                worst = worst.max(err).max(step);
            }
            eprintln!("{variant} gpu shapes {shapes}: f16 KV cache vs f32, max |logit difference| {worst:.2e}");
            assert!(worst > 0.0 && worst < KV_F16_TOLERANCE, "{variant}: {worst:e}");
        }
    }
    // The default follows the weights: f32 weights keep the exact cache.
    let (model, _) = load("softmax");
    assert_eq!(gpu(&model, &GpuOptions::default()).kv_dtype(), KvDtype::F32);
    assert_eq!(gpu(&model, &GpuOptions { dtype: Dtype::Q8, ..Default::default() }).kv_dtype(), KvDtype::F16);
}

/// The model with every weight the device stores as f16 rounded to f16 (final norm stays f32).
fn round_to_f16(model: Model) -> Model {
    let rounded = model.into_dtype(Dtype::F16, None).unwrap().into_dtype(Dtype::F32, None).unwrap();
    assert_eq!(rounded.dtype(), Dtype::F32);
    rounded
}

/// The built-in model writes the same tokens on both backends, greedy and sampled.
#[test]
fn built_in_model_generates_the_same_text_on_gpu_and_cpu() {
    let (model, tokenizer) = tokenformer::default_model::load((Dtype::F32, None)).unwrap();
    let prompt = tokenizer.encode("The sea was").unwrap();
    let mut g = gpu(&model, &GpuOptions::default());
    let mut c = cpu(model);
    let sampled =
        SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, repetition_penalty: 1.2, seed: 7, max_tokens: 48 };
    for params in [SamplingParams::greedy(48), sampled] {
        let on_gpu = generate(&mut g, &prompt, &params, tokenizer.eos_id(), |_| ControlFlow::Continue(())).unwrap();
        let on_cpu = generate(&mut c, &prompt, &params, tokenizer.eos_id(), |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(on_gpu, on_cpu, "{params:?}");
        assert!(!on_cpu.ids.is_empty());
    }
}

fn tokenformer(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenformer")).args(args).output().unwrap()
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn cli_runs_on_the_gpu_backend() {
    let exp = expected("gelu_l2_norm");
    let model = common::fixture_dir("gelu_l2_norm");
    let model = model.to_str().unwrap();
    let case = &exp.cases[1];
    let out = tokenformer(&["logits", "--model", model, "--backend", "gpu", "--ids", &ids_arg(&case.ids)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<Vec<f64>> = serde_json::from_value(json["logits"].clone()).unwrap();
    let err = max_abs_diff(rows.into_iter().flatten(), case.logits.iter().flatten().copied());
    assert!(err < LOGITS_TOLERANCE, "{err:e}");
    for dtype in ["f32", "f16"] {
        let args = ["generate", "--model", model, "--backend", "gpu", "--dtype", dtype, "--max-tokens", "32", "--json"];
        let out = tokenformer(&[&args[..], &["--ids", &ids_arg(&case.ids)]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<u32> = serde_json::from_value(json["ids"].clone()).unwrap();
        // f16 weights may pick other tokens; f32 gives the reference's.
        if dtype == "f32" {
            assert_eq!(ids, case.greedy);
        }
    }
    // The CPU backend takes f16 weights too: near the reference, and not the f32 numbers.
    let ids = ids_arg(&case.ids);
    let cpu_logits = |dtype: &str| -> Vec<f64> {
        let out = tokenformer(&["logits", "--model", model, "--dtype", dtype, "--ids", &ids]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        serde_json::from_value::<Vec<Vec<f64>>>(json["logits"].clone()).unwrap().into_iter().flatten().collect()
    };
    let (f16, f32) = (cpu_logits("f16"), cpu_logits("f32"));
    assert!(max_abs_diff(f16.iter().copied(), case.logits.iter().flatten().copied()) < 5e-2);
    assert!(max_abs_diff(f16, f32) > 0.0, "--dtype f16 must round the CPU's weights");
}

#[test]
fn a_kv_cache_beyond_the_device_binding_limit_is_an_error() {
    let (mut model, _) = load("softmax");
    let row_bytes = model.config.hidden_size as u64 * 4;
    model.config.max_positions = (context().max_binding_bytes() / row_bytes + 1) as usize;
    let err = pollster::block_on(GpuBackend::new(context(), &model, &GpuOptions::default())).err().unwrap();
    assert!(err.to_string().contains("KV cache buffer needs"), "{err}");
}

#[test]
fn more_heads_than_the_decode_kernels_weigh_is_an_error() {
    let (mut model, _) = load("softmax");
    model.config.num_heads = 257;
    let err = pollster::block_on(GpuBackend::new(context(), &model, &GpuOptions::default())).err().unwrap();
    assert!(err.to_string().contains("257 attention heads exceed"), "{err}");
}

/// A lost device (here destroyed on purpose) is an error naming the loss, not a panic or a hang,
/// and a backend on a new device works.
#[test]
fn a_lost_device_is_an_error_and_a_new_device_works() {
    let (model, _) = load("softmax");
    let ctx = pollster::block_on(GpuContext::new()).unwrap();
    let mut lost = pollster::block_on(GpuBackend::new(ctx.clone(), &model, &GpuOptions::default())).unwrap();
    assert!(lost.forward(&[1, 2], false).is_ok());
    ctx.device.destroy();
    let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    let err = lost.forward(&[3], false).unwrap_err().to_string();
    assert!(err.contains("device was lost"), "{err}");
    let mut fresh = gpu(&model, &GpuOptions::default());
    assert_eq!(fresh.forward(&[1, 2], false).unwrap().len(), fresh.vocab_size());
}

/// Inspection on the device against the CPU backend's capture, on every variant and a prompt longer
/// than a prefill chunk (so captures are assembled from two submissions), with weights split into
/// chunks: whole Theta maps and attention probabilities, the device-side top-k and column sums, and
/// slot dictionaries through the tied head.
#[test]
fn inspection_on_the_gpu_matches_the_cpu_capture() {
    const K: usize = 5;
    for name in VARIANTS {
        let (model, _) = load(name);
        let cfg = model.config.clone();
        let ids: Vec<u32> = (0..150u32).map(|i| (i * 7 + 3) % model.vocab_size as u32).collect();
        let ids = &ids[..ids.len().min(cfg.max_positions - 1)];
        let options = GpuOptions { max_chunk_bytes: Some(16384), ..Default::default() };
        let mut device = gpu(&model, &options);
        let mut host = cpu(model.clone());
        let request = tokenformer::InspectRequest {
            layers: (0..cfg.num_layers).collect(),
            projections: tokenformer::Projection::ALL.to_vec(),
            attention: true,
            lens: None,
        };
        let want = host.inspect(ids, &request).unwrap();
        let got = pollster::block_on(device.inspect_async(ids, &request)).unwrap();
        assert_eq!((got.theta.len(), got.attention.len()), (cfg.num_layers * 5, cfg.num_layers));
        let mut worst = 0f64;
        for (g, w) in got.theta.iter().zip(&want.theta) {
            assert_eq!((g.layer, g.proj, g.tokens, g.slots), (w.layer, w.proj, w.tokens, w.slots));
            let err = max_abs_diff(g.weights.iter().map(|&v| v as f64), w.weights.iter().map(|&v| v as f64));
            assert!(err < 1e-3, "{name} layer {} {:?}: {err:e}", g.layer, g.proj);
            worst = worst.max(err);
        }
        for (g, w) in got.attention.iter().zip(&want.attention) {
            let err = max_abs_diff(g.probs.iter().map(|&v| v as f64), w.probs.iter().map(|&v| v as f64));
            assert!(err < 1e-4, "{name} layer {} attention: {err:e}", g.layer);
        }
        eprintln!("{name}: {} tokens, max |Theta error| {worst:.2e}", ids.len());

        let summaries = pollster::block_on(device.summarize_async(ids, &request, K)).unwrap();
        assert_eq!(summaries.len(), got.theta.len());
        for (s, full) in summaries.iter().zip(&got.theta) {
            // The device's selection over its own numbers equals selecting from its full map.
            assert_eq!(s.top, full.top_k(K), "{name} layer {} {:?}", s.layer, s.proj);
            let sums = full.column_sums();
            let err = max_abs_diff(s.column_sums.iter().map(|&v| v as f64), sums.iter().map(|&v| v as f64));
            assert!(err < 1e-3 * ids.len() as f64, "{name} layer {} {:?} sums: {err:e}", s.layer, s.proj);
        }
        // The capture left the prompt in the cache, as on the CPU, and nothing in the decode path:
        // the next token is the same single submission with the same dispatches as without it.
        assert_eq!(device.position(), ids.len());
        let params = SamplingParams { temperature: 0.0, ..Default::default() };
        let next = device.next_token(&[1], &[1], &params, 0).unwrap();
        let mut fresh = gpu(&model, &options);
        fresh.forward(ids, false).unwrap();
        assert_eq!(fresh.next_token(&[1], &[1], &params, 0).unwrap(), next);
        assert_eq!(device.last_pass(), fresh.last_pass());

        for (layer, proj, slot) in
            [(0, tokenformer::Projection::Ffn, 1), (cfg.num_layers - 1, tokenformer::Projection::Value, 2)]
        {
            let got = pollster::block_on(device.dictionary_async(layer, proj, slot)).unwrap();
            let want = tokenformer::inspect::dictionary(&model, layer, proj, slot).unwrap();
            let err = max_abs_diff(got.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
            assert!(err < 1e-4, "{name} dictionary layer {layer} {proj:?} slot {slot}: {err:e}");
        }
        assert!(pollster::block_on(device.dictionary_async(0, tokenformer::Projection::Key, cfg.qkv_slots)).is_err());
    }
}

/// Soak: upload/drop cycles and generations on one device leave the device's allocated memory
/// where the first cycle left it (gpu-allocator's report on Vulkan). A fresh device, so other
/// tests' buffers do not count. 10 cycles and 100 generations by default; the full soak
/// (50 and 1000): `TOKENFORMER_SOAK=full cargo test --test gpu reloads -- --nocapture`.
#[test]
fn reloads_and_generations_do_not_grow_gpu_memory() {
    let full = std::env::var("TOKENFORMER_SOAK").as_deref() == Ok("full");
    let (cycles, generations) = if full { (50, 1000) } else { (10, 100) };
    let ctx = pollster::block_on(GpuContext::new()).unwrap();
    let allocated = || {
        ctx.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        ctx.device.generate_allocator_report().map(|r| r.total_allocated_bytes)
    };
    let (model, _) = load("l2_norm_gelu");
    let params = SamplingParams { temperature: 0.8, seed: 3, max_tokens: 2, ..Default::default() };
    let run = |g: &mut GpuBackend| generate(g, &[5, 6, 7], &params, None, |_| ControlFlow::Continue(())).unwrap();
    let mut after_cycle = Vec::new();
    for _ in 0..cycles {
        let mut g = pollster::block_on(GpuBackend::new(ctx.clone(), &model, &GpuOptions::default())).unwrap();
        run(&mut g);
        drop(g);
        after_cycle.push(allocated());
    }
    let mut g = pollster::block_on(GpuBackend::new(ctx.clone(), &model, &GpuOptions::default())).unwrap();
    run(&mut g);
    let before = allocated();
    let first = run(&mut g);
    for _ in 1..generations {
        assert_eq!(run(&mut g), first, "the same seeded generation every time");
    }
    let after = allocated();
    eprintln!(
        "GPU memory (gpu-allocator): after load/drop cycles 1, 2, {cycles}: {:?} {:?} {:?}; a loaded model before / after {generations} generations: {before:?} / {after:?}",
        after_cycle[0], after_cycle[1], after_cycle[cycles - 1]
    );
    let report = after_cycle[0].expect("Vulkan reports its allocations");
    assert!(after_cycle.iter().all(|&a| a == Some(report)), "memory grew over load/drop cycles: {after_cycle:?}");
    assert_eq!(after, before, "memory grew over {generations} generations");
}

/// What the out-of-memory error reports: the 150M shape's weights are the 607 MB the bench reads
/// per token (f32), half in f16, plus its KV cache and activations.
#[test]
fn device_memory_needs_are_stated_in_megabytes() {
    let model = Model::synthetic("150m", 0).unwrap();
    let memory = |dtype: Dtype| tokenformer::gpu::DeviceMemory::planned(&model.config, model.vocab_size, dtype);
    let (f32, f16, q8, q4) = (memory(Dtype::F32), memory(Dtype::F16), memory(Dtype::Q8), memory(Dtype::Q4));
    assert_eq!(f32.weights, 2 * f16.weights);
    assert_eq!(f32.weights as usize, model.weight_bytes_per_token());
    // The released shapes' rows are whole superblocks: the device holds the file's bytes, the
    // parameter tokens at 8.5 and 5 bits a weight, the embedding in f16.
    for (q, dtype) in [(q8, Dtype::Q8), (q4, Dtype::Q4)] {
        let stored = model.config.weight_bytes_per_token(model.vocab_size, dtype, Dtype::F16);
        assert_eq!(q.weights as usize, stored, "{dtype}");
    }
    let embedding = (model.vocab_size * 768 * 2) as u64;
    assert_eq!((q8.weights - embedding) * 64, (f16.weights - embedding) * 34);
    assert_eq!((q4.weights - embedding) * 32, (f16.weights - embedding) * 10);
    // Keys and values of 12 layers x 2048 positions x 768 floats, f16 with any smaller weights.
    assert_eq!(f32.kv_cache, 2 * 12 * 2048 * 768 * 4);
    assert!([f16, q8, q4].iter().all(|m| m.kv_cache == f32.kv_cache / 2));
    let text = f32.to_string();
    assert!(text.starts_with(&format!("about {:.1} MB (", f32.total() as f64 / 1e6)), "{text}");
    assert!((600e6..620e6).contains(&(f32.weights as f64)), "{text}");
}

/// Interventions, the logit lens and search by token on the device against the CPU backend, on
/// every fixture model, with weights split into chunks (search reads them chunk by chunk): logits
/// of every position, greedy and seeded samples (identical), Theta as inspected, the lens, the
/// search scores; a changed set drops a decode step computed ahead; an empty set gives the decode
/// path back.
#[test]
fn actions_on_the_gpu_match_the_cpu() {
    let fixture = common::actions_fixture();
    for entry in &fixture.models {
        let name = entry.model.as_str();
        let (model, _) = load(name);
        let set = common::fixture_interventions(entry, &model);
        for options in [GpuOptions::default(), GpuOptions { max_chunk_bytes: Some(16384), ..Default::default() }] {
            let mut device = gpu(&model, &options);
            let mut host = cpu(model.clone());
            let plain_pass = {
                device.forward(&entry.ids, false).unwrap();
                device.next_token(&[1], &[1], &SamplingParams::greedy(4), 0).unwrap();
                device.last_pass()
            };
            device.set_interventions(set.clone());
            host.set_interventions(set.clone());
            assert!(!device.decoding_ahead() && device.position() == 0, "{name}: a new set empties the cache");
            let err = max_abs_diff(logits(&mut device, &entry.ids), logits(&mut host, &entry.ids));
            eprintln!(
                "{name} chunks {:?}: max |GPU - CPU| logits under interventions {err:.2e}",
                options.max_chunk_bytes
            );
            assert!(err < LOGITS_TOLERANCE, "{name}: logits under interventions, max |GPU - CPU| {err:e}");
            let sampled = SamplingParams { temperature: 0.9, top_k: 20, top_p: 0.95, seed: 11, ..Default::default() };
            for params in [SamplingParams::greedy(12), SamplingParams { max_tokens: 12, ..sampled }] {
                let on = |b: &mut dyn Backend| {
                    generate(b, &entry.ids, &params, None, |_| ControlFlow::Continue(())).unwrap().ids
                };
                assert_eq!(on(&mut device), on(&mut host), "{name}: {params:?} under interventions");
            }
            // Two steps in: a step is in flight ahead; changing the set drops it and starts over.
            device.reset();
            let greedy = SamplingParams::greedy(8);
            device.next_token(&entry.ids, &entry.ids, &greedy, 0).unwrap();
            assert!(device.decoding_ahead());
            device.set_interventions(Interventions::default());
            assert!(!device.decoding_ahead() && device.position() == 0);
            host.set_interventions(Interventions::default());
            let mut fresh = gpu(&model, &options);
            assert_eq!(
                device.next_token(&entry.ids, &entry.ids, &greedy, 0).unwrap(),
                fresh.next_token(&entry.ids, &entry.ids, &greedy, 0).unwrap(),
                "{name}: after the set was removed"
            );
            // Without interventions a token is the decode path's again.
            device.next_token(&[1], &[1], &greedy, 0).unwrap();
            assert_eq!(device.last_pass(), plain_pass, "{name}: the decode path after the set was removed");

            device.set_interventions(set.clone());
            host.set_interventions(set.clone());
            let request = InspectRequest {
                layers: vec![0, model.config.num_layers - 1],
                projections: Projection::ALL.to_vec(),
                attention: false,
                lens: Some(fixture.lens_top),
            };
            let want = host.inspect(&entry.ids, &request).unwrap();
            let got = pollster::block_on(device.inspect_async(&entry.ids, &request)).unwrap();
            for (g, w) in got.theta.iter().zip(&want.theta) {
                let err = max_abs_diff(g.weights.iter().map(|&v| v as f64), w.weights.iter().map(|&v| v as f64));
                assert!(err < LOGITS_TOLERANCE, "{name} layer {} {:?} Theta: {err:e}", g.layer, g.proj);
            }
            let (g, w) = (got.lens.unwrap(), want.lens.unwrap());
            assert_eq!((g.layers, g.tokens, g.k), (w.layers, w.tokens, w.k));
            let err = max_abs_diff(g.top.iter().map(|p| p.1 as f64), w.top.iter().map(|p| p.1 as f64));
            eprintln!("{name}: max |GPU - CPU| lens probability {err:.2e}");
            assert!(err < LOGITS_TOLERANCE, "{name}: lens probabilities {err:e}");
            for (gp, wp) in g.top.iter().zip(&w.top) {
                let tie = w.top.iter().any(|q| q.0 != wp.0 && (q.1 - wp.1).abs() < 1e-3);
                assert!(gp.0 == wp.0 || tie, "{name}: lens ids {g:?} vs {w:?}");
            }

            let token = entry.search.token;
            let got = pollster::block_on(device.search_async(token)).unwrap();
            let want = tokenformer::search::scores(&model, token).unwrap();
            let err = max_abs_diff(got.iter().map(|&v| v as f64), want.iter().map(|&v| v as f64));
            assert!(err < LOGITS_TOLERANCE, "{name} {options:?}: search scores {err:e}");
            let rank = |s: &[f32]| tokenformer::search::rank(s, &model.config, 1)[0];
            assert_eq!(
                (rank(&got).layer, rank(&got).proj, rank(&got).slot),
                (rank(&want).layer, rank(&want).proj, rank(&want).slot)
            );
            eprintln!("{name} chunks {:?}: max |search error| {err:.2e}", options.max_chunk_bytes);
        }
    }
}
