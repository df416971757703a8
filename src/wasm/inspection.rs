//! The inspector's JavaScript API: Theta maps, their device-reduced summaries, attention and slot
//! dictionaries, as methods of [`Engine`] and plain objects for JavaScript.

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::{js_value, object, Engine};
use crate::error::Error;
use crate::inspect::{self, AttentionCapture, Capture, InspectRequest};
use crate::model::Projection;

/// A `PattentionCapture` for JavaScript.
fn theta_object(ids: &[u32], c: Capture) -> std::result::Result<JsValue, JsValue> {
    object(&[
        ("ids", js_sys::Uint32Array::from(ids).into()),
        ("layer", c.layer.into()),
        ("proj", c.proj.as_str().into()),
        ("tokens", c.tokens.into()),
        ("slots", c.slots.into()),
        ("weights", js_sys::Float32Array::from(c.weights.as_slice()).into()),
    ])
}

/// An `AttentionCapture` for JavaScript.
fn attention_object(ids: &[u32], a: AttentionCapture) -> std::result::Result<JsValue, JsValue> {
    object(&[
        ("ids", js_sys::Uint32Array::from(ids).into()),
        ("layer", a.layer.into()),
        ("heads", a.heads.into()),
        ("tokens", a.tokens.into()),
        ("probs", js_sys::Float32Array::from(a.probs.as_slice()).into()),
    ])
}

#[wasm_bindgen]
impl Engine {
    /// The Pattention weights Theta (after the normalisation: the numbers multiplied into the value
    /// tokens) of block `layer` (0-based), projection `proj`, for every token of `ids` run from an
    /// empty cache: `{ ids, layer, proj, tokens, slots, weights }` with `weights` a row-major
    /// [tokens × slots] Float32Array. With `ids` given any running generation ends; with `ids`
    /// undefined the running generation's tokens are inspected and it goes on.
    #[wasm_bindgen(unchecked_return_type = "Promise<PattentionCapture>")]
    pub fn inspect(
        &self,
        ids: Option<Vec<u32>>,
        layer: usize,
        #[wasm_bindgen(unchecked_param_type = "Projection")] proj: String,
    ) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let proj = Projection::parse(&proj).map_err(js_value)?;
            let (ids, inspection) =
                shared.run_inspection(ids, InspectRequest::theta(layer, proj)).await.map_err(js_value)?;
            let capture = inspection.theta.into_iter().next();
            theta_object(&ids, capture.ok_or_else(|| js_value(Error::Usage("nothing was captured".into())))?)
        })
    }

    /// Theta of one Pattention layer and the attention probabilities of its block from one forward
    /// pass: `{ ids, map: PattentionCapture, attention: AttentionCapture }`. `ids` as for `inspect`.
    #[wasm_bindgen(js_name = inspectBlock, unchecked_return_type = "Promise<BlockCapture>")]
    pub fn inspect_block(
        &self,
        ids: Option<Vec<u32>>,
        layer: usize,
        #[wasm_bindgen(unchecked_param_type = "Projection")] proj: String,
    ) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let proj = Projection::parse(&proj).map_err(js_value)?;
            let request = InspectRequest { layers: vec![layer], projections: vec![proj], attention: true, lens: None };
            let (ids, inspection) = shared.run_inspection(ids, request).await.map_err(js_value)?;
            let (Some(map), Some(attention)) =
                (inspection.theta.into_iter().next(), inspection.attention.into_iter().next())
            else {
                return Err(js_value(Error::Usage("nothing was captured".into())));
            };
            object(&[
                ("ids", js_sys::Uint32Array::from(ids.as_slice()).into()),
                ("map", theta_object(&ids, map)?),
                ("attention", attention_object(&ids, attention)?),
            ])
        })
    }

    /// Every Pattention layer of the model reduced for an overview (on WebGPU on the device, so
    /// only the reductions are read back): `{ ids, tokens, k, maps }`, one map per layer ×
    /// projection with `{ layer, proj, slots, top, values, columnSums }`: `top`/`values` hold each
    /// token's `k` strongest slots and their weights, [tokens × k] row-major, largest first.
    /// `ids` as for `inspect`.
    #[wasm_bindgen(js_name = inspectSummary, unchecked_return_type = "Promise<PattentionSummary>")]
    pub fn inspect_summary(&self, ids: Option<Vec<u32>>, k: usize) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            if k == 0 {
                return Err(js_value(Error::Usage("k must be at least 1".into())));
            }
            let ids = shared.inspected_ids(ids).map_err(js_value)?;
            shared.count_pass();
            let summaries = shared.with_compute(async |c| c.summarize(&ids, k).await).await.map_err(js_value)?;
            let maps = js_sys::Array::new();
            for s in summaries {
                let k = s.top.first().map_or(0, Vec::len);
                let slots: Vec<u32> = s.top.iter().flatten().map(|&(slot, _)| slot as u32).collect();
                let values: Vec<f32> = s.top.iter().flatten().map(|&(_, v)| v).collect();
                maps.push(&object(&[
                    ("layer", s.layer.into()),
                    ("proj", s.proj.as_str().into()),
                    ("slots", s.slots.into()),
                    ("k", k.into()),
                    ("top", js_sys::Uint32Array::from(slots.as_slice()).into()),
                    ("values", js_sys::Float32Array::from(values.as_slice()).into()),
                    ("columnSums", js_sys::Float32Array::from(s.column_sums.as_slice()).into()),
                ])?);
            }
            object(&[
                ("ids", js_sys::Uint32Array::from(ids.as_slice()).into()),
                ("tokens", ids.len().into()),
                ("maps", maps.into()),
            ])
        })
    }

    /// The causal attention probabilities of block `layer`, per head: `{ ids, layer, heads, tokens,
    /// probs }` with `probs[(head × tokens + query) × tokens + key]`. `ids` as for `inspect`.
    #[wasm_bindgen(unchecked_return_type = "Promise<AttentionCapture>")]
    pub fn attention(&self, ids: Option<Vec<u32>>, layer: usize) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let (ids, inspection) =
                shared.run_inspection(ids, InspectRequest::attention(layer)).await.map_err(js_value)?;
            let capture = inspection.attention.into_iter().next();
            attention_object(&ids, capture.ok_or_else(|| js_value(Error::Usage("nothing was captured".into())))?)
        })
    }

    /// A parameter token's "dictionary": its value vector scored against every vocabulary token
    /// through the tied embedding; resolves to the `k` best as `[{ id, text, score }]`, best first.
    /// Leaves any generation and the cache as they are.
    #[wasm_bindgen(unchecked_return_type = "Promise<DictionaryEntry[]>")]
    pub fn dictionary(
        &self,
        layer: usize,
        #[wasm_bindgen(unchecked_param_type = "Projection")] proj: String,
        slot: usize,
        k: usize,
    ) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let proj = Projection::parse(&proj).map_err(js_value)?;
            let scores =
                shared.with_compute(async |c| c.dictionary(layer, proj, slot).await).await.map_err(js_value)?;
            let entries = js_sys::Array::new();
            for (id, score) in inspect::top_k(&scores, k) {
                let text = shared.tokenizer.decode(&[id as u32]).map_err(js_value)?;
                entries.push(&object(&[("id", id.into()), ("text", text.into()), ("score", score.into())])?);
            }
            Ok(entries.into())
        })
    }
}

#[wasm_bindgen(typescript_custom_section)]
const CAPTURE_TYPE: &str = r#"
/** A Pattention layer of a block. */
export type Projection = "query" | "key" | "value" | "proj" | "ffn";

/** Theta of one Pattention layer: `weights[t * slots + s]` is token t's weight on parameter token s. */
export interface PattentionCapture {
  ids: Uint32Array;
  layer: number;
  proj: Projection;
  tokens: number;
  slots: number;
  weights: Float32Array;
}

/** One Pattention layer reduced: each token's `k` strongest slots (`top`) and their weights
 *  (`values`), [tokens × k] row-major, largest first; `columnSums[s]` sums slot s over the tokens. */
export interface PattentionMapSummary {
  layer: number;
  proj: Projection;
  slots: number;
  k: number;
  top: Uint32Array;
  values: Float32Array;
  columnSums: Float32Array;
}

/** Every Pattention layer of the model reduced, for an overview. */
export interface PattentionSummary {
  ids: Uint32Array;
  tokens: number;
  maps: PattentionMapSummary[];
}

/** Attention probabilities of one block: `probs[(head * tokens + query) * tokens + key]`. */
export interface AttentionCapture {
  ids: Uint32Array;
  layer: number;
  heads: number;
  tokens: number;
  probs: Float32Array;
}

/** Theta of one Pattention layer and its block's attention, from one forward pass. */
export interface BlockCapture {
  ids: Uint32Array;
  map: PattentionCapture;
  attention: AttentionCapture;
}

/** A vocabulary token a parameter token's value vector points at, with its score. */
export interface DictionaryEntry {
  id: number;
  text: string;
  score: number;
}
"#;
