//! The Pattention inspector on the CPU backend against the independent float64 reference
//! (`tools/reference.py` via `tests/fixtures/inspect.json`): Theta of every projection, the attention
//! probabilities, the reductions, and the errors for a bad layer or projection.

mod common;

use common::{cpu, inspect_fixture, load, max_abs_diff, top_values};
use tokenformer::inspect::{column_sums, dictionary, top_k};
use tokenformer::{Backend, Error, InspectRequest, Projection};

/// f32 forward pass against float64: the same bound the logits are held to.
const TOLERANCE: f64 = 1e-4;

#[test]
fn theta_matches_the_reference_for_every_projection() {
    let fixture = inspect_fixture();
    let mut checked = 0;
    for entry in &fixture.models {
        let (model, tokenizer) = load(&entry.model);
        assert_eq!(tokenizer.encode(&fixture.text).unwrap(), entry.ids, "{}: tokenizer", entry.model);
        let cfg = model.config.clone();
        let mut backend = cpu(model);
        assert!(entry.layers.len() >= 2, "{}: at least two layers in the fixture", entry.model);
        for layer in &entry.layers {
            // All five in one pass, and each on its own: the same numbers.
            let block = backend.inspect(&entry.ids, &InspectRequest::block(layer.layer)).unwrap();
            let mut worst: f64 = 0.0;
            for proj in Projection::ALL {
                let want = &layer.theta[proj.as_str()];
                let got = backend.inspect(&entry.ids, &InspectRequest::theta(layer.layer, proj)).unwrap();
                assert!(got.attention.is_empty());
                let cap = got.theta(layer.layer, proj).unwrap();
                assert_eq!((cap.layer, cap.proj), (layer.layer, proj));
                assert_eq!((cap.tokens, cap.slots), (entry.ids.len(), proj.slots(&cfg)), "{} {proj:?}", entry.model);
                assert_eq!((want.len(), want[0].len()), (cap.tokens, cap.slots));
                let err = max_abs_diff(cap.weights.iter().map(|&v| v as f64), want.iter().flatten().copied());
                assert!(
                    err < TOLERANCE,
                    "{} layer {} {}: max |error| {err:e}",
                    entry.model,
                    layer.layer,
                    proj.as_str()
                );
                assert_eq!(block.theta(layer.layer, proj), Some(cap), "{} layer {} {proj:?}", entry.model, layer.layer);
                worst = worst.max(err);
                checked += 1;
            }
            eprintln!("{} layer {}: max |Theta error| over all projections {worst:.2e}", entry.model, layer.layer);
        }
    }
    assert!(checked >= 2 * 2 * 5);
}

#[test]
fn attention_probabilities_match_the_reference_sum_to_one_and_are_causal() {
    let fixture = inspect_fixture();
    for entry in &fixture.models {
        let (model, _) = load(&entry.model);
        let (layers, heads) = (model.config.num_layers, model.config.num_heads);
        let mut backend = cpu(model);
        let t = entry.ids.len();
        for layer in 0..layers {
            let got = backend.inspect(&entry.ids, &InspectRequest::attention(layer)).unwrap();
            assert!(got.theta.is_empty());
            let att = got.attention(layer).unwrap();
            assert_eq!((att.layer, att.heads, att.tokens, att.probs.len()), (layer, heads, t, heads * t * t));
            for h in 0..heads {
                for i in 0..t {
                    let row = att.row(h, i);
                    let sum: f64 = row.iter().map(|&p| p as f64).sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{} layer {layer} head {h} row {i}: sum {sum}", entry.model);
                    assert!(row[..=i].iter().all(|&p| p > 0.0 && p <= 1.0), "{} row {i}: {row:?}", entry.model);
                    assert!(row[i + 1..].iter().all(|&p| p == 0.0), "{} row {i} sees the future: {row:?}", entry.model);
                }
                // The first token can only attend to itself.
                assert_eq!(att.row(h, 0)[0], 1.0);
            }
            if let Some(want) = entry.layers.iter().find(|l| l.layer == layer).and_then(|l| l.attention.as_ref()) {
                assert_eq!(want.len(), heads);
                let err = max_abs_diff(att.probs.iter().map(|&v| v as f64), want.iter().flatten().flatten().copied());
                eprintln!("{} layer {layer}: max |attention error| {err:.2e}", entry.model);
                assert!(err < TOLERANCE, "{} layer {layer}: max |error| {err:e}", entry.model);
            }
        }
    }
}

#[test]
fn top_k_and_column_sums_agree_with_the_full_weights_and_the_reference() {
    let fixture = inspect_fixture();
    for entry in &fixture.models {
        let (model, _) = load(&entry.model);
        let mut backend = cpu(model);
        for layer in &entry.layers {
            let got = backend.inspect(&entry.ids, &InspectRequest::block(layer.layer)).unwrap();
            for cap in &got.theta {
                let want = &layer.theta[cap.proj.as_str()];
                for k in [1, 3, cap.slots, cap.slots + 5] {
                    let tops = cap.top_k(k);
                    assert_eq!(tops.len(), cap.tokens);
                    for (token, top) in tops.iter().enumerate() {
                        let row = cap.row(token);
                        assert_eq!(top.len(), k.min(cap.slots));
                        // Entries are the row's own values, largest first, ties by lower slot.
                        for &(slot, v) in top {
                            assert_eq!(row[slot], v);
                        }
                        for pair in top.windows(2) {
                            assert!(pair[0].1 > pair[1].1 || (pair[0].1 == pair[1].1 && pair[0].0 < pair[1].0));
                        }
                        // Nothing left out beats the last kept entry.
                        let &(last_slot, last) = top.last().unwrap();
                        for (slot, &v) in row.iter().enumerate() {
                            if top.iter().all(|&(s, _)| s != slot) {
                                assert!(v < last || (v == last && slot > last_slot), "slot {slot} ({v}) left out");
                            }
                        }
                        // And the kept values are the reference's largest values.
                        let err = max_abs_diff(top.iter().map(|&(_, v)| v as f64), top_values(&want[token], k));
                        assert!(err < TOLERANCE, "{} {:?} token {token} top {k}: {err:e}", entry.model, cap.proj);
                    }
                }
                let sums = cap.column_sums();
                assert_eq!(sums, column_sums(&cap.weights, cap.slots));
                let want_sums: Vec<f64> = (0..cap.slots).map(|s| want.iter().map(|row| row[s]).sum()).collect();
                let err = max_abs_diff(sums.iter().map(|&v| v as f64), want_sums);
                assert!(err < TOLERANCE * cap.tokens as f64, "{} {:?} column sums: {err:e}", entry.model, cap.proj);
            }
        }
    }
    assert_eq!(top_k(&[0.25, 1.0, 0.25, -3.0], 3), vec![(1, 1.0), (0, 0.25), (2, 0.25)]);
}

#[test]
fn inspecting_starts_from_an_empty_cache_and_leaves_the_prompt_in_it() {
    let fixture = inspect_fixture();
    let entry = &fixture.models[0];
    let (model, _) = load(&entry.model);
    let mut backend = cpu(model);
    let request = InspectRequest::block(0);
    let fresh = backend.inspect(&entry.ids, &request).unwrap();
    // Whatever the cache held before, the capture is the same.
    backend.reset();
    backend.forward(&[5, 6, 7], false).unwrap();
    assert_eq!(backend.inspect(&entry.ids, &request).unwrap(), fresh);
    assert_eq!(backend.position(), entry.ids.len());
    // The cache now holds the prompt: one more token equals a full pass over prompt + token.
    let next = backend.forward(&[9], false).unwrap();
    let mut ids = entry.ids.clone();
    ids.push(9);
    backend.reset();
    let full = backend.forward(&ids, false).unwrap();
    assert!(max_abs_diff(next.iter().map(|&v| v as f64), full.iter().map(|&v| v as f64)) < 5e-5);
}

#[test]
fn a_bad_layer_or_projection_is_a_specific_error() {
    let (model, _) = load("l2_norm_gelu");
    let layers = model.config.num_layers;
    assert_eq!(layers, 3);
    let mut backend = cpu(model);
    backend.forward(&[3, 4], false).unwrap();
    for request in [InspectRequest::theta(3, Projection::Ffn), InspectRequest::attention(usize::MAX)] {
        let err = backend.inspect(&[1, 2, 3], &request).unwrap_err();
        assert!(matches!(err, Error::LayerOutOfRange { layers: 3, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("layer {} is out of range", request.layers[0])), "{msg}");
        assert!(msg.contains("3 layers, numbered 0 to 2"), "{msg}");
    }
    // Bad prompts are the forward pass's own errors.
    assert!(matches!(backend.inspect(&[], &InspectRequest::block(0)), Err(Error::EmptyPrompt)));
    assert!(matches!(
        backend.inspect(&[1, 99_999], &InspectRequest::block(0)),
        Err(Error::TokenOutOfRange { id: 99_999, .. })
    ));
    // A refused request does not touch the cache.
    assert_eq!(backend.position(), 2);

    let err = Projection::parse("mlp").unwrap_err();
    assert!(matches!(&err, Error::UnknownProjection(name) if name == "mlp"), "{err:?}");
    assert!(err.to_string().contains("query, key, value, proj, ffn"), "{err}");
    for proj in Projection::ALL {
        assert_eq!(Projection::parse(proj.as_str()).unwrap(), proj);
    }
}

#[test]
fn one_pass_over_every_layer_gives_each_layers_own_maps() {
    let fixture = inspect_fixture();
    let entry = &fixture.models[0];
    let (model, _) = load(&entry.model);
    let cfg = model.config.clone();
    let mut backend = cpu(model);
    let all = backend.inspect(&entry.ids, &InspectRequest::every_theta(&cfg)).unwrap();
    assert_eq!(all.theta.len(), cfg.num_layers * 5);
    for layer in 0..cfg.num_layers {
        let one = backend.inspect(&entry.ids, &InspectRequest::block(layer)).unwrap();
        for proj in Projection::ALL {
            assert_eq!(all.theta(layer, proj), one.theta(layer, proj), "layer {layer} {proj:?}");
        }
    }
}

#[test]
fn a_slot_dictionary_is_its_value_vector_scored_against_every_embedding_row() {
    let fixture = inspect_fixture();
    let entry = &fixture.models[0];
    let (model, _) = load(&entry.model);
    let (d, vocab) = (model.config.hidden_size, model.vocab_size);
    for (layer, proj, slot) in [(0, Projection::Ffn, 0), (1, Projection::Query, 3), (0, Projection::Proj, 7)] {
        let got = dictionary(&model, layer, proj, slot).unwrap();
        assert_eq!(got.len(), vocab);
        let p = model.blocks[layer].get(proj);
        let (values, embedding) = (p.value_param_tokens.to_f32(), model.embedding.to_f32());
        let value = &values[slot * d..(slot + 1) * d];
        // Independently, in f64.
        let want = (0..vocab).map(|id| {
            let row = &embedding[id * d..(id + 1) * d];
            row.iter().zip(value).map(|(&e, &v)| e as f64 * v as f64).sum::<f64>()
        });
        let err = max_abs_diff(got.iter().map(|&v| v as f64), want);
        assert!(err < 1e-5, "layer {layer} {proj:?} slot {slot}: {err:e}");
    }
    let slots = model.config.ffn_slots;
    let err = dictionary(&model, 0, Projection::Ffn, slots).unwrap_err();
    assert!(matches!(err, Error::SlotOutOfRange { .. }), "{err}");
    assert!(err.to_string().contains(&format!("numbered 0 to {}", slots - 1)), "{err}");
    assert!(matches!(dictionary(&model, 99, Projection::Ffn, 0), Err(Error::LayerOutOfRange { .. })));
}
