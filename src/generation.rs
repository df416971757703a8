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

impl Perplexity {
    fn of(nll: f64, scored: usize) -> Perplexity {
        let nll_mean = nll / scored as f64;
        Perplexity { tokens_scored: scored, nll_mean, perplexity: nll_mean.exp() }
    }
}

/// Sliding-window perplexity: windows of `window` tokens start every `stride` tokens, each run from
/// position 0; a token is scored once, in the first window where it has context.
pub fn perplexity(backend: &mut dyn Backend, ids: &[u32], window: usize, stride: usize) -> Result<Perplexity> {
    let vocab = backend.vocab_size();
    let mut nll = 0f64;
    let scored = score_windows(&mut [backend], ids, window, stride, |t, rows| {
        let row = &rows[0][..vocab];
        nll += log_z(row) - row[ids[t] as usize] as f64;
    })?;
    Ok(Perplexity::of(nll, scored))
}

/// How a model's next-token distributions differ from a reference's on the same text (the same
/// windows as [`perplexity`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub reference: Perplexity,
    pub other: Perplexity,
    /// Mean over the scored positions of KL(reference ‖ other), in nats.
    pub mean_kl: f64,
    /// Share of the scored positions whose most likely next token is the reference's.
    pub top1_agreement: f64,
}

/// Runs `reference` and `other` over the same windows of `ids` and compares their predictions.
pub fn compare(
    reference: &mut dyn Backend,
    other: &mut dyn Backend,
    ids: &[u32],
    window: usize,
    stride: usize,
) -> Result<Comparison> {
    if reference.vocab_size() != other.vocab_size() {
        return Err(Error::Usage("the two models have different vocabularies".into()));
    }
    let vocab = reference.vocab_size();
    let (mut nll, mut kl, mut agree) = ([0f64; 2], 0f64, 0usize);
    let scored = score_windows(&mut [reference, other], ids, window, stride, |t, rows| {
        let [p, q] = [0, 1].map(|i| log_softmax(&rows[i][..vocab]));
        for (i, lp) in [&p, &q].into_iter().enumerate() {
            nll[i] -= lp[ids[t] as usize];
        }
        kl += p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
        agree += (argmax(&p) == argmax(&q)) as usize;
    })?;
    Ok(Comparison {
        reference: Perplexity::of(nll[0], scored),
        other: Perplexity::of(nll[1], scored),
        mean_kl: kl / scored as f64,
        top1_agreement: agree as f64 / scored as f64,
    })
}

/// Feeds every backend the windows of `ids` (see [`perplexity`]) and calls `score(t, rows)` for
/// each scored position t with each backend's logits predicting it. Returns the positions scored.
fn score_windows(
    backends: &mut [&mut dyn Backend],
    ids: &[u32],
    window: usize,
    stride: usize,
    mut score: impl FnMut(usize, &[&[f32]]),
) -> Result<usize> {
    if ids.len() < 2 {
        return Err(Error::Usage(format!("perplexity needs at least 2 tokens, the text has {}", ids.len())));
    }
    let max = backends.iter().map(|b| b.max_positions()).min().unwrap_or(0);
    if window < 2 || window > max || stride == 0 || stride > window {
        return Err(Error::Usage(format!("window {window} must be in 2..={max} and stride {stride} in 1..=window")));
    }
    let vocab = backends.first().map_or(0, |b| b.vocab_size());
    let (mut scored, mut next_unscored, mut begin) = (0usize, 1usize, 0);
    loop {
        let end = (begin + window).min(ids.len());
        let logits = backends
            .iter_mut()
            .map(|b| {
                b.reset();
                b.forward(&ids[begin..end], true)
            })
            .collect::<Result<Vec<_>>>()?;
        for t in next_unscored.max(begin + 1)..end {
            let at = (t - 1 - begin) * vocab;
            let rows: Vec<&[f32]> = logits.iter().map(|l| &l[at..at + vocab]).collect();
            score(t, &rows);
            scored += 1;
        }
        next_unscored = end;
        if end == ids.len() {
            return Ok(scored);
        }
        begin += stride;
    }
}

/// log Σ exp of a logits row, in f64: the softmax's normaliser.
fn log_z(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max
}

/// log softmax of a logits row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let log_z = log_z(row);
    row.iter().map(|&v| v as f64 - log_z).collect()
}

/// The first index of the largest value.
fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}
