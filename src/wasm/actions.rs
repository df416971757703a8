//! Acting on what the inspector shows, from JavaScript: interventions on parameter tokens, the
//! next-token distribution they change, search by token and the logit lens, as methods of
//! [`Engine`].

use js_sys::Promise;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::{js_error, js_value, object, Engine};
use crate::error::{Error, Result};
use crate::inspect::InspectRequest;
use crate::intervene::{Intervention, Interventions};
use crate::lens::top_probabilities;
use crate::model::Projection;
use crate::search;

/// An intervention as JavaScript writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsIntervention {
    layer: usize,
    proj: String,
    slot: usize,
    factor: f32,
}

fn interventions_from_js(list: JsValue, cfg: &crate::config::ModelConfig) -> Result<Interventions> {
    let list: Vec<JsIntervention> = if list.is_undefined() || list.is_null() {
        Vec::new()
    } else {
        serde_wasm_bindgen::from_value(list).map_err(|e| Error::Usage(format!("interventions: {e}")))?
    };
    let parsed = list
        .into_iter()
        .map(|i| Ok(Intervention { layer: i.layer, proj: Projection::parse(&i.proj)?, slot: i.slot, factor: i.factor }))
        .collect::<Result<Vec<_>>>()?;
    Interventions::new(parsed, cfg)
}

fn interventions_to_js(set: &Interventions) -> std::result::Result<JsValue, JsValue> {
    let out = js_sys::Array::new();
    for i in set.iter() {
        out.push(&object(&[
            ("layer", i.layer.into()),
            ("proj", i.proj.as_str().into()),
            ("slot", i.slot.into()),
            ("factor", i.factor.into()),
        ])?);
    }
    Ok(out.into())
}

#[wasm_bindgen]
impl Engine {
    /// Scales parameter tokens' Theta columns in every forward pass from now on (prefill, decode,
    /// inspection, logits): `[{ layer, proj, slot, factor }]`, 0 knocks a slot out, 2 doubles it,
    /// negative allowed; `[]` removes them. A slot named twice takes the last factor. Ends any
    /// running generation and empties the cache (computed under the previous set). Throws on a
    /// target the model lacks or a factor that is not finite, leaving the previous set.
    #[wasm_bindgen(js_name = setInterventions)]
    pub fn set_interventions(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Intervention[]")] list: JsValue,
    ) -> std::result::Result<(), JsError> {
        let set = interventions_from_js(list, &self.config).map_err(js_error)?;
        let s = &self.shared;
        let mut compute = s.compute.take().ok_or_else(|| js_error(super::Shared::busy()))?;
        s.cancel();
        compute.set_interventions(set.clone());
        s.compute.set(Some(compute));
        s.interventions.replace(set);
        Ok(())
    }

    /// The interventions in force, ordered by layer, projection and slot.
    #[wasm_bindgen(getter, unchecked_return_type = "Intervention[]")]
    pub fn interventions(&self) -> std::result::Result<JsValue, JsError> {
        interventions_to_js(&self.shared.interventions.borrow()).map_err(|_| JsError::new("cannot list interventions"))
    }

    /// Forward passes run so far (each prefill, decoded token, inspection and logits call counts one).
    #[wasm_bindgen(getter)]
    pub fn passes(&self) -> f64 {
        self.shared.passes.get() as f64
    }

    /// The `k` most likely next tokens after `ids` (from an empty cache, under the interventions in
    /// force): `[{ id, text, prob }]`, most likely first. One forward pass; ends any generation.
    #[wasm_bindgen(js_name = nextTokens, unchecked_return_type = "Promise<NextToken[]>")]
    pub fn next_tokens(&self, ids: Vec<u32>, k: usize) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let logits = shared.logits(&ids, false).await.map_err(js_value)?;
            let out = js_sys::Array::new();
            for (id, prob) in top_probabilities(&logits, k) {
                let text = shared.tokenizer.decode(&[id]).map_err(js_value)?;
                out.push(&object(&[("id", id.into()), ("text", text.into()), ("prob", prob.into())])?);
            }
            Ok(out.into())
        })
    }

    /// The value parameter tokens of every layer and projection that point at `token` (a text that
    /// encodes to exactly one token, or an id), ranked by their dictionary score for it, `E[token] ·
    /// v`: `{ id, text, hits: [{ layer, proj, slot, score }] }`, the `k` best first. On WebGPU the
    /// scores are computed on the device. Leaves any generation and the cache as they are (on WebGPU
    /// a decode step computed ahead is redone).
    #[wasm_bindgen(unchecked_return_type = "Promise<SearchResult>")]
    pub fn search(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | number")] token: JsValue,
        k: usize,
    ) -> Promise {
        let shared = self.shared.clone();
        let config = self.config.clone();
        future_to_promise(async move {
            let id = match (token.as_string(), token.as_f64()) {
                (Some(text), _) => search::single_token(&shared.tokenizer, &text).map_err(js_value)?,
                (None, Some(id)) if id >= 0.0 && id.fract() == 0.0 && id <= u32::MAX as f64 => id as u32,
                _ => return Err(js_value(Error::Usage("search: give a token's text or id".into()))),
            };
            let scores = shared.with_compute(async |c| c.search(id).await).await.map_err(js_value)?;
            let hits = js_sys::Array::new();
            for s in search::rank(&scores, &config, k) {
                hits.push(&object(&[
                    ("layer", s.layer.into()),
                    ("proj", s.proj.as_str().into()),
                    ("slot", s.slot.into()),
                    ("score", s.score.into()),
                ])?);
            }
            let text = shared.tokenizer.decode(&[id]).map_err(js_value)?;
            object(&[("id", id.into()), ("text", text.into()), ("hits", hits.into())])
        })
    }

    /// The logit lens: what each block predicts at each position of `ids` (from an empty cache,
    /// under the interventions in force), read from the residual after the block through the final
    /// norm and the tied head: `{ ids, layers, tokens, k, top, probs }` with `top` (ids) and `probs`
    /// [layers × tokens × k], most likely first. `ids` undefined: the running generation's tokens,
    /// as for `inspect`. The last block's row is the model's own prediction.
    #[wasm_bindgen(js_name = logitLens, unchecked_return_type = "Promise<LogitLens>")]
    pub fn logit_lens(&self, ids: Option<Vec<u32>>, k: usize) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let (ids, inspection) =
                shared.run_inspection(ids, InspectRequest::logit_lens(k)).await.map_err(js_value)?;
            let lens = inspection.lens.ok_or_else(|| js_value(Error::Usage("nothing was captured".into())))?;
            let top: Vec<u32> = lens.top.iter().map(|&(id, _)| id).collect();
            let probs: Vec<f32> = lens.top.iter().map(|&(_, p)| p).collect();
            object(&[
                ("ids", js_sys::Uint32Array::from(ids.as_slice()).into()),
                ("layers", lens.layers.into()),
                ("tokens", lens.tokens.into()),
                ("k", lens.k.into()),
                ("top", js_sys::Uint32Array::from(top.as_slice()).into()),
                ("probs", js_sys::Float32Array::from(probs.as_slice()).into()),
            ])
        })
    }
}

#[wasm_bindgen(typescript_custom_section)]
const ACTION_TYPES: &str = r#"
/** Scale parameter token `slot` of `proj` in block `layer` by `factor` (0 knocks it out). */
export interface Intervention {
  layer: number;
  proj: Projection;
  slot: number;
  factor: number;
}

/** A likely next token. */
export interface NextToken {
  id: number;
  text: string;
  prob: number;
}

/** A value parameter token that points at the searched token, with its dictionary score. */
export interface SearchHit {
  layer: number;
  proj: Projection;
  slot: number;
  score: number;
}

export interface SearchResult {
  id: number;
  text: string;
  hits: SearchHit[];
}

/** Each block's `k` most likely next tokens per position: `top`/`probs` [layers × tokens × k]. */
export interface LogitLens {
  ids: Uint32Array;
  layers: number;
  tokens: number;
  k: number;
  top: Uint32Array;
  probs: Float32Array;
}
"#;
