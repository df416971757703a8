//! The HF `tokenizers` library on a `tokenizer.json`, plus incremental decoding for streaming.

use crate::error::{Error, Result};

pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    eos: Option<u32>,
}

impl Tokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        // The number of ids, not of entries: ids may be sparse, and the model must score up to the largest.
        let vocab_size = inner.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
        if vocab_size == 0 {
            return Err(Error::Tokenizer("the vocabulary is empty".into()));
        }
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
