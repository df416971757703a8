//! The CPU backend split across threads gives the numbers of one thread, bit for bit: every split is
//! over independent outputs, so prefill and decode logits, greedy and seeded continuations and
//! inspections are identical whatever the pool size.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use tokenformer::{generate, Backend, CpuBackend, InspectRequest, Model, Projection, SamplingParams};

/// Everything one pool computes on `model`: prefill logits of every position, 8 decode steps'
/// logits, a seeded sampled continuation, and an inspection of every map.
fn run(model: &Arc<Model>, threads: usize, prompt: &[u32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        assert_eq!(tokenformer::cpu::parallel::threads(), threads);
        let mut backend = CpuBackend::new(model.clone());
        let mut logits = backend.forward(prompt, true).unwrap();
        let mut next = tokenformer::sampling::argmax(&logits[logits.len() - model.vocab_size..]);
        for _ in 0..8 {
            let step = backend.forward(&[next], false).unwrap();
            next = tokenformer::sampling::argmax(&step);
            logits.extend(step);
        }
        let params = SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7, ..SamplingParams::greedy(24) };
        let sampled = generate(&mut backend, prompt, &params, None, |_| ControlFlow::Continue(())).unwrap().ids;
        let layers = (0..model.config.num_layers).collect();
        let request = InspectRequest { layers, projections: Projection::ALL.to_vec(), attention: true, lens: None };
        let inspection = backend.inspect(prompt, &request).unwrap();
        let maps = inspection.theta.iter().map(|c| &c.weights).chain(inspection.attention.iter().map(|c| &c.probs));
        (logits, sampled, maps.flatten().copied().collect())
    })
}

#[test]
fn every_thread_count_gives_the_one_thread_numbers() {
    let (model, tokenizer) = tokenformer::default_model::load((tokenformer::Dtype::F32, None)).unwrap();
    let model = Arc::new(model);
    let prompt = tokenizer
        .encode("Call me Ishmael. Some years ago, never mind how long precisely, having little money")
        .unwrap();
    assert!(prompt.len() > 16);
    let one = run(&model, 1, &prompt);
    for threads in [2, 3, 4] {
        let many = run(&model, threads, &prompt);
        assert!(one.0.iter().zip(&many.0).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads: logits differ");
        assert_eq!(one.1, many.1, "{threads} threads: sampled ids differ");
        assert!(
            one.2.iter().zip(&many.2).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads: inspection differs"
        );
    }
}
