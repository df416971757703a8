//! Search by token: which value parameter tokens, in every layer and projection, point at a given
//! vocabulary token. A slot's score is its dictionary score for that token (`E[token] · v_slot`
//! through the tied embedding, no final norm; see [`crate::inspect::dictionary`]), so the slot a
//! search ranks first lists the token high in its own dictionary.
//!
//! Scores over the whole model come as one vector in a fixed order: block by block, and within a
//! block query, key, value, proj, ffn ([`Projection::ALL`]), each projection's slots in order.

use crate::config::ModelConfig;
use crate::cpu::products::{matmul_bt_weights, matmul_weights};
use crate::error::{Error, Result};
use crate::inspect::top_k;
use crate::model::{Model, Projection};
use crate::tokenizer::Tokenizer;

/// One ranked parameter token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotScore {
    pub layer: usize,
    pub proj: Projection,
    pub slot: usize,
    pub score: f32,
}

/// Parameter tokens of one block over all five projections.
pub fn slots_per_layer(cfg: &ModelConfig) -> usize {
    Projection::ALL.iter().map(|p| p.slots(cfg)).sum()
}

/// Where `proj`'s slots start within a block's part of the score vector.
pub fn projection_offset(proj: Projection, cfg: &ModelConfig) -> usize {
    Projection::ALL.iter().take_while(|&&p| p != proj).map(|p| p.slots(cfg)).sum()
}

/// [`Error::TokenOutOfRange`] unless `token` is one the model scores.
pub fn check_token(token: u32, vocab: usize) -> Result<()> {
    if token as usize >= vocab {
        return Err(Error::TokenOutOfRange { id: token, vocab });
    }
    Ok(())
}

/// The one token `text` encodes to. A text of several tokens is refused, naming them: which of
/// them a person means is theirs to say (a word usually has a form with a leading space too).
pub fn single_token(tokenizer: &Tokenizer, text: &str) -> Result<u32> {
    match tokenizer.encode(text)?.as_slice() {
        [id] => Ok(*id),
        [] => Err(Error::Usage("search: the token is empty".into())),
        ids => {
            let pieces: Vec<String> =
                ids.iter().map(|&id| format!("{id} {:?}", tokenizer.decode(&[id]).unwrap_or_default())).collect();
            Err(Error::Usage(format!(
                "{text:?} is {} tokens ({}): search takes one token; search for one of them",
                ids.len(),
                pieces.join(", ")
            )))
        }
    }
}

/// Every value parameter token's score for `token`, in the order described above.
pub fn scores(model: &Model, token: u32) -> Result<Vec<f32>> {
    check_token(token, model.vocab_size)?;
    let d = model.config.hidden_size;
    let mut e = vec![0f32; d];
    model.embedding.read_row(token as usize, &mut e);
    let mut out = Vec::with_capacity(model.blocks.len() * slots_per_layer(&model.config));
    for block in &model.blocks {
        for proj in Projection::ALL {
            let p = block.get(proj);
            let mut s = vec![0f32; p.n];
            // Each slot's value row [n × d] against e; quantized values are stored as Vᵀ [d × n],
            // whose rows e weighs.
            match p.values_transposed() {
                true => matmul_weights(&e, &p.value_param_tokens, 1, d, p.n, &mut s),
                false => matmul_bt_weights(&e, &p.value_param_tokens, 1, d, p.n, &mut s),
            }
            out.extend(s);
        }
    }
    Ok(out)
}

/// The `k` highest of `scores` (laid out as [`scores`] lays them out), highest first.
pub fn rank(scores: &[f32], cfg: &ModelConfig, k: usize) -> Vec<SlotScore> {
    let per_layer = slots_per_layer(cfg);
    top_k(scores, k)
        .into_iter()
        .map(|(i, score)| {
            let (layer, mut at) = (i / per_layer, i % per_layer);
            let mut proj = Projection::Query;
            for p in Projection::ALL {
                proj = p;
                if at < p.slots(cfg) {
                    break;
                }
                at -= p.slots(cfg);
            }
            SlotScore { layer, proj, slot: at, score }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_map_back_to_layer_projection_and_slot() {
        let cfg = ModelConfig::from_json(
            br#"{"num_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "qkv_slot_num": 2,
                 "proj_slot_num": 3, "ffn_slot_num": 4, "max_position_embeddings": 16}"#,
        )
        .unwrap();
        assert_eq!(slots_per_layer(&cfg), 13);
        assert_eq!(projection_offset(Projection::Ffn, &cfg), 9);
        let mut scores = vec![0f32; 26];
        scores[13 + 10] = 3.0; // layer 1 ffn slot 1
        scores[4] = 2.0; // layer 0 value slot 0
        scores[8] = 1.0; // layer 0 proj slot 2
        let got = rank(&scores, &cfg, 3);
        let want = [(1, Projection::Ffn, 1, 3.0), (0, Projection::Value, 0, 2.0), (0, Projection::Proj, 2, 1.0)];
        for (g, (layer, proj, slot, score)) in got.iter().zip(want) {
            assert_eq!(*g, SlotScore { layer, proj, slot, score });
        }
    }
}
