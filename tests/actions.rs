//! Acting on what the inspector shows, on the CPU backend against the float64 reference
//! (`tools/reference.py` via `tests/fixtures/actions.json`) on every fixture model: interventions in
//! prefill, decode, inspection and perplexity; search scores; the logit lens.

mod common;

use std::ops::ControlFlow;

use common::{actions_fixture, cpu, fixture_interventions, load, max_abs_diff, VARIANTS};
use tokenformer::lens::top_probabilities;
use tokenformer::{generate, perplexity, Backend, InspectRequest, Interventions, Projection, SamplingParams};

/// f32 against float64, as for the logits.
const TOLERANCE: f64 = 1e-4;

#[test]
fn the_fixture_covers_every_model_folder() {
    let mut names: Vec<String> = actions_fixture().models.into_iter().map(|m| m.model).collect();
    let mut want = VARIANTS.map(String::from).to_vec();
    names.sort();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn interventions_match_the_reference_in_prefill_decode_inspection_and_perplexity() {
    for entry in actions_fixture().models {
        let name = &entry.model;
        let (model, _) = load(name);
        let vocab = model.vocab_size;
        let set = fixture_interventions(&entry, &model);
        let mut backend = cpu(model.clone());
        let plain = backend.forward(&entry.ids, true).unwrap();
        backend.set_interventions(set.clone());
        let got = backend.forward(&entry.ids, true).unwrap();
        let want = entry.logits.iter().flatten().copied();
        let err = max_abs_diff(got.iter().map(|&v| v as f64), want);
        assert!(err < TOLERANCE, "{name}: max |logit error| under interventions {err:e}");
        // The set changes the prediction far beyond the tolerance (the test can fail).
        let moved = max_abs_diff(got.iter().map(|&v| v as f64), plain.iter().map(|&v| v as f64));
        eprintln!(
            "{name}: max |logit error| under interventions {err:.2e} (they moved the logits by up to {moved:.2})"
        );
        assert!(moved > 0.05, "{name}: the interventions moved the logits by only {moved:e}");

        // Decode: one token at a time through the cache gives the same last row.
        backend.reset();
        let mut last = Vec::new();
        for &id in &entry.ids {
            last = backend.forward(&[id], false).unwrap();
        }
        let err = max_abs_diff(last.iter().map(|&v| v as f64), entry.logits.last().unwrap().iter().copied());
        assert!(err < TOLERANCE, "{name}: decoded last row {err:e}");
        assert_eq!(last.len(), vocab);

        if let Some(greedy) = &entry.greedy {
            let params = SamplingParams::greedy(greedy.len());
            let out = generate(&mut backend, &entry.ids, &params, None, |_| ControlFlow::Continue(())).unwrap();
            assert_eq!(&out.ids, greedy, "{name}: greedy tokens under the interventions");
        }

        // Inspection records the Theta the values were multiplied by: the knocked-out column is 0.
        for (key, want) in &entry.theta {
            let layer: usize = key.split(':').next().unwrap().parse().unwrap();
            let got = backend.inspect(&entry.ids, &InspectRequest::theta(layer, Projection::Ffn)).unwrap();
            let cap = got.theta(layer, Projection::Ffn).unwrap();
            let err = max_abs_diff(cap.weights.iter().map(|&v| v as f64), want.iter().flatten().copied());
            assert!(err < TOLERANCE, "{name} Theta {key}: {err:e}");
        }
        let (layer, slot) = (entry.interventions[0].0, entry.interventions[0].2);
        assert_eq!(entry.interventions[0].3, 0.0);
        let got = backend.inspect(&entry.ids, &InspectRequest::theta(layer, Projection::Ffn)).unwrap();
        assert!(got.theta[0].rows().all(|row| row[slot] == 0.0), "{name}: knocked-out slot {slot} still used");

        let e = &entry.eval;
        let p = perplexity(&mut backend, &e.ids, e.window, e.stride).unwrap();
        eprintln!("{name}: mean NLL under interventions {} vs {} (reference)", p.nll_mean, e.nll_mean);
        assert_eq!(p.tokens_scored, e.tokens_scored);
        assert!((p.nll_mean - e.nll_mean).abs() < TOLERANCE, "{name}: nll {} vs {}", p.nll_mean, e.nll_mean);

        // An empty set gives the plain model back.
        backend.set_interventions(Interventions::default());
        assert_eq!(backend.forward(&entry.ids, true).unwrap(), plain);
    }
}

#[test]
fn search_scores_match_the_reference() {
    for entry in actions_fixture().models {
        let (model, _) = load(&entry.model);
        let got = tokenformer::search::scores(&model, entry.search.token).unwrap();
        assert_eq!(got.len(), entry.search.scores.len(), "{}", entry.model);
        let err = max_abs_diff(got.iter().map(|&v| v as f64), entry.search.scores.iter().copied());
        eprintln!("{}: max |search score error| {err:.2e}", entry.model);
        assert!(err < TOLERANCE, "{}: {err:e}", entry.model);
        // The first-ranked slot's dictionary scores the token exactly as the search did.
        let best = tokenformer::search::rank(&got, &model.config, 1)[0];
        let dict = tokenformer::inspect::dictionary(&model, best.layer, best.proj, best.slot).unwrap();
        assert_eq!(dict[entry.search.token as usize], best.score);
        let vocab = model.vocab_size as u32;
        assert!(tokenformer::search::scores(&model, vocab).is_err());
    }
}

#[test]
fn the_logit_lens_matches_the_reference_and_its_last_block_is_the_prediction() {
    let fixture = actions_fixture();
    for entry in &fixture.models {
        let name = &entry.model;
        let (model, _) = load(name);
        let layers = model.config.num_layers;
        let mut backend = cpu(model);
        let lens = backend.inspect(&entry.ids, &InspectRequest::logit_lens(fixture.lens_top)).unwrap().lens.unwrap();
        assert_eq!((lens.layers, lens.tokens, lens.k), (layers, entry.ids.len(), fixture.lens_top));
        let mut worst: f64 = 0.0;
        for (layer, rows) in entry.lens.iter().enumerate() {
            for (token, want) in rows.iter().enumerate() {
                let got = lens.get(layer, token);
                let err = max_abs_diff(got.iter().map(|p| p.1 as f64), want.iter().map(|p| p.1));
                assert!(err < TOLERANCE, "{name} block {layer} token {token}: {got:?} vs {want:?}");
                // Ids agree wherever the probabilities are not within the tolerance of a tie.
                for (i, &(id, p)) in want.iter().enumerate() {
                    if want.iter().enumerate().all(|(j, q)| j == i || (q.1 - p).abs() > TOLERANCE) {
                        assert_eq!(got[i].0, id, "{name} block {layer} token {token} rank {i}");
                    }
                }
                worst = worst.max(err);
            }
        }
        eprintln!("{name}: max |lens probability error| {worst:.2e}");
        // The last block's row is the model's own prediction.
        backend.reset();
        let logits = backend.forward(&entry.ids, true).unwrap();
        for (token, row) in logits.chunks_exact(backend.vocab_size()).enumerate() {
            assert_eq!(lens.get(layers - 1, token), top_probabilities(row, fixture.lens_top).as_slice());
        }
    }
}
