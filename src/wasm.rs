//! The JavaScript API (wasm-bindgen). Every fallible call returns a rejected promise / thrown
//! `Error` with the crate's message; nothing panics across the boundary.

use std::sync::Arc;

use wasm_bindgen::prelude::*;

use crate::generation::{Backend, Generator};
use crate::loader::load_from_bytes;
use crate::model::Model;
use crate::sampling::SamplingParams;
use crate::tokenizer::{TextStream, Tokenizer};
use crate::CpuBackend;

fn js_error(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A loaded model with its tokenizer and KV cache, plus the state of one generation.
#[wasm_bindgen]
pub struct Engine {
    model: Arc<Model>,
    tokenizer: Tokenizer,
    backend: CpuBackend,
    run: Option<(Generator, TextStream)>,
}

/// One generated token: its id and the text it completes (empty while a character is split).
#[wasm_bindgen(getter_with_clone)]
pub struct Token {
    pub id: u32,
    pub text: String,
}

#[wasm_bindgen]
impl Engine {
    /// Builds an engine from the three files' bytes (weights: safetensors or the authors' pytorch_model.bin).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(config: &[u8], weights: &[u8], tokenizer: &[u8]) -> Result<Engine, JsError> {
        let (model, tokenizer) = load_from_bytes(config, weights, tokenizer, &mut |_, _| {}).map_err(js_error)?;
        let model = Arc::new(model);
        Ok(Engine { backend: CpuBackend::new(model.clone()), model, tokenizer, run: None })
    }

    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    #[wasm_bindgen(getter, js_name = maxPositions)]
    pub fn max_positions(&self) -> usize {
        self.model.config.max_positions
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.tokenizer.encode(text).map_err(js_error)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, JsError> {
        self.tokenizer.decode(ids).map_err(js_error)
    }

    /// Logits of every position of `ids` from an empty cache, [ids.length × vocabSize] row-major.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, JsError> {
        self.run = None;
        self.backend.reset();
        self.backend.forward(ids, true).map_err(js_error)
    }

    /// Starts a generation after `prompt` ids with sampling `params` (an object with any of
    /// temperature, top_k, top_p, repetition_penalty, seed, max_tokens). Replaces any running one.
    pub fn start(&mut self, prompt: &[u32], params: JsValue) -> Result<(), JsError> {
        let params: SamplingParams = if params.is_undefined() || params.is_null() {
            SamplingParams::default()
        } else {
            serde_wasm_bindgen::from_value(params).map_err(|e| JsError::new(&format!("sampling parameters: {e}")))?
        };
        let generator =
            Generator::new(&mut self.backend, prompt, &params, self.tokenizer.eos_id()).map_err(js_error)?;
        self.run = Some((generator, TextStream::default()));
        Ok(())
    }

    /// Computes the next token, or returns `undefined` when the generation has ended
    /// (end-of-text, max_tokens, or a full context).
    pub fn step(&mut self) -> Result<Option<Token>, JsError> {
        let Some((generator, stream)) = self.run.as_mut() else { return Ok(None) };
        match generator.step(&mut self.backend).map_err(js_error)? {
            Some(id) => Ok(Some(Token { id, text: stream.push(&self.tokenizer, id).map_err(js_error)? })),
            None => {
                self.run = None;
                Ok(None)
            }
        }
    }

    /// Abandons the running generation; the engine stays usable.
    pub fn cancel(&mut self) {
        self.run = None;
    }
}
