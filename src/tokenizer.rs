//! The HF `tokenizers` library on a `tokenizer.json`, plus incremental decoding for streaming.

use crate::error::{Error, Result};

pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    eos: Option<u32>,
}

/// Tokenizer models the `tokenizers` library knows.
const MODEL_TYPES: [&str; 4] = ["BPE", "WordPiece", "WordLevel", "Unigram"];

/// What the `tokenizers` library would panic on or describe only by its Rust types, refused with a
/// message that names the problem: a model type it does not know, and SentencePiece "Precompiled"
/// normalizers, whose character map it panics on when malformed (no TokenFormer tokenizer uses one).
fn precheck(value: &serde_json::Value) -> Result<()> {
    if !value.is_object() {
        return Err(Error::Tokenizer("expected a JSON object".into()));
    }
    if let Some(kind) = value["model"]["type"].as_str() {
        if !MODEL_TYPES.contains(&kind) {
            return Err(Error::Tokenizer(format!("unknown model type {kind:?} (one of {})", MODEL_TYPES.join(", "))));
        }
    }
    fn has_precompiled(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(map) => {
                map.get("type").and_then(|t| t.as_str()) == Some("Precompiled") || map.values().any(has_precompiled)
            }
            serde_json::Value::Array(items) => items.iter().any(has_precompiled),
            _ => false,
        }
    }
    if has_precompiled(&value["normalizer"]) {
        return Err(Error::Tokenizer("the \"Precompiled\" (SentencePiece) normalizer is not supported".into()));
    }
    Ok(())
}

impl Tokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        // Parsed once (the GPT-NeoX file is 2.4 MB): checked as JSON, then handed to the library.
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        precheck(&value)?;
        let declared: Vec<(String, u64)> = value["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_u64()?)))
            .collect();
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(value).map_err(|e| Error::Tokenizer(e.to_string()))?;
        // The library renumbers an added token whose declared id is taken (with only a log line):
        // the ids the model was trained with would silently change.
        for (content, id) in declared {
            let actual = inner.token_to_id(&content);
            if actual.map(u64::from) != Some(id) {
                let actual = actual.map_or("none".to_string(), |a| a.to_string());
                return Err(Error::Tokenizer(format!("added token {content:?} declares id {id} but gets id {actual}")));
            }
        }
        // The number of ids, not of entries: ids may be sparse, and the model must score up to the largest.
        let Some(&largest) = inner.get_vocab(true).values().max() else {
            return Err(Error::Tokenizer("the vocabulary is empty".into()));
        };
        let vocab_size = (largest as usize).saturating_add(1);
        let eos = inner.token_to_id(END_OF_TEXT);
        Ok(Tokenizer { inner, vocab_size, eos })
    }

    /// Encodes text as the model saw it in training: no BOS or other special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// `<|endoftext|>`, which stops generation.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
}

/// Turns a stream of ids into a stream of text pieces. Byte-level BPE can split one character
/// across tokens, so text is released only once it decodes without a trailing replacement char.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
