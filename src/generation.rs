//! What every backend offers, and the loops built on it: generation and perplexity.

use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::sampling::{sample, SamplingParams};

/// A model instance with its own KV cache.
pub trait Backend {
    /// Ids the model scores (the tokenizer's vocabulary; embedding padding rows excluded).
    fn vocab_size(&self) -> usize;
    fn max_positions(&self) -> usize;
    /// Number of tokens in the KV cache.
    fn position(&self) -> usize;
    /// Empties the KV cache.
    fn reset(&mut self);
    /// Runs `ids` at the next positions, appending them to the KV cache. Returns the logits
    /// [rows × vocab_size] of every new position when `all_logits`, else of the last one only.
    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>>;
    /// Feeds `ids` and returns the sampled next token. `context` is every token so far (prompt
    /// and generated), for the repetition penalty. Backends that sample on the device override it.
    fn next_token(&mut self, ids: &[u32], context: &[u32], params: &SamplingParams, step: u32) -> Result<u32> {
        let logits = self.forward(ids, false)?;
        Ok(sample(&logits, context, params, step))
    }
}

/// Checks ids and positions before a backend touches them.
pub fn check_tokens(backend: &(impl Backend + ?Sized), ids: &[u32]) -> Result<()> {
    check_ids(ids, backend.vocab_size(), backend.position(), backend.max_positions())
}

/// [`check_tokens`] for a model with `vocab` ids, `position` tokens cached and `max_positions`.
pub fn check_ids(ids: &[u32], vocab: usize, position: usize, max_positions: usize) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::TokenOutOfRange { id, vocab });
    }
    let needed = position + ids.len();
    if needed > max_positions {
        return Err(Error::TooManyPositions { needed, max: max_positions });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The end-of-text token was sampled (it is not part of the output).
    EndOfText,
    MaxTokens,
    /// The context reached max_position_embeddings.
    ContextFull,
    /// The token callback asked to stop.
    Cancelled,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfText => "end_of_text",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub stop: StopReason,
}

/// One generation in progress, advanced a token at a time, so callers can stream, yield to an
/// event loop, or cancel between tokens.
pub struct Generator {
    params: SamplingParams,
    eos: Option<u32>,
    max_positions: usize,
    /// Prompt and generated tokens so far (for the repetition penalty).
    context: Vec<u32>,
    /// Tokens not yet in the KV cache: the prompt, then the last generated token.
    feed: Vec<u32>,
    generated: Vec<u32>,
    stop: Option<StopReason>,
}

/// The work for one token: feed `feed` at the next positions, then sample with these arguments
/// (those of [`Backend::next_token`]).
pub struct TokenRequest<'a> {
    pub feed: &'a [u32],
    pub context: &'a [u32],
    pub params: &'a SamplingParams,
    pub step: u32,
}

impl Generator {
    /// Checks the prompt and parameters and empties the backend's cache.
    pub fn new(backend: &mut dyn Backend, prompt: &[u32], params: &SamplingParams, eos: Option<u32>) -> Result<Self> {
        backend.reset();
        Self::begin(prompt, params, eos, backend.vocab_size(), backend.max_positions())
    }

    /// [`Generator::new`] for a backend driven by hand (asynchronously, in the browser): the
    /// caller empties its cache before the first request.
    pub fn begin(
        prompt: &[u32],
        params: &SamplingParams,
        eos: Option<u32>,
        vocab: usize,
        max_positions: usize,
    ) -> Result<Self> {
        params.validate()?;
        check_ids(prompt, vocab, 0, max_positions)?;
        Ok(Generator {
            params: params.clone(),
            eos,
            max_positions,
            context: prompt.to_vec(),
            feed: prompt.to_vec(),
            generated: Vec::new(),
            stop: None,
        })
    }

    /// What the backend must compute for the next token, or `None` once the generation has ended.
    pub fn request(&mut self) -> Option<TokenRequest<'_>> {
        if self.stop.is_some() {
            return None;
        }
        if self.generated.len() >= self.params.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return None;
        }
        // A new token would sit at position context.len(), which must exist.
        if self.context.len() >= self.max_positions {
            self.stop = Some(StopReason::ContextFull);
            return None;
        }
        Some(TokenRequest {
            feed: &self.feed,
            context: &self.context,
            params: &self.params,
            step: self.generated.len() as u32,
        })
    }

    /// Takes the token the backend sampled for the last request: `None` if it ends the generation.
    pub fn accept(&mut self, id: u32) -> Option<u32> {
        if Some(id) == self.eos {
            self.stop = Some(StopReason::EndOfText);
            return None;
        }
        self.generated.push(id);
        self.context.push(id);
        self.feed = vec![id];
        Some(id)
    }

    /// The next token, or `None` once the generation has ended (see [`Generator::stop_reason`]).
    pub fn step(&mut self, backend: &mut dyn Backend) -> Result<Option<u32>> {
        let Some(r) = self.request() else { return Ok(None) };
        let id = backend.next_token(r.feed, r.context, r.params, r.step)?;
        Ok(self.accept(id))
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Prompt and generated tokens so far.
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// The tokens the backend's cache holds once every request so far has been computed: the
    /// context without what is still to be fed.
    pub fn cached(&self) -> &[u32] {
        &self.context[..self.context.len() - self.feed.len()]
    }
}

/// Generates after `prompt` from an empty cache. `on_token` sees each new id and may stop the loop.
pub fn generate(
    backend: &mut dyn Backend,
    prompt: &[u32],
    params: &SamplingParams,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    let mut generator = Generator::new(backend, prompt, params, eos)?;
    while let Some(id) = generator.step(backend)? {
        if on_token(id).is_break() {
            return Ok(Generation { ids: generator.generated, stop: StopReason::Cancelled });
        }
    }
    let stop = generator.stop.unwrap_or(StopReason::MaxTokens);
    Ok(Generation { ids: generator.generated, stop })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub tokens_scored: usize,
    pub nll_mean: f64,
    pub perplexity: f64,
}

/// Sliding-window perplexity: windows of `window` tokens start every `stride` tokens, each run from
/// position 0; a token is scored once, in the first window where it has context.
pub fn perplexity(backend: &mut dyn Backend, ids: &[u32], window: usize, stride: usize) -> Result<Perplexity> {
    if ids.len() < 2 {
        return Err(Error::Usage(format!("perplexity needs at least 2 tokens, the text has {}", ids.len())));
    }
    if window < 2 || window > backend.max_positions() || stride == 0 || stride > window {
        return Err(Error::Usage(format!(
            "window {window} must be in 2..={} and stride {stride} in 1..=window",
            backend.max_positions()
        )));
    }
    let vocab = backend.vocab_size();
    let (mut nll, mut scored, mut next_unscored) = (0f64, 0usize, 1usize);
    let mut begin = 0;
    loop {
        let end = (begin + window).min(ids.len());
        backend.reset();
        let logits = backend.forward(&ids[begin..end], true)?;
        for t in next_unscored.max(begin + 1)..end {
            let row = &logits[(t - 1 - begin) * vocab..(t - begin) * vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let log_z = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            nll += log_z - row[ids[t] as usize] as f64;
            scored += 1;
        }
        next_unscored = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    let nll_mean = nll / scored as f64;
    Ok(Perplexity { tokens_scored: scored, nll_mean, perplexity: nll_mean.exp() })
}
