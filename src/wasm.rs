//! The JavaScript API (wasm-bindgen). Every fallible call returns a rejected promise / thrown
//! `Error` with the crate's message; nothing panics across the boundary.
//!
//! The GPU backend's read-backs are asynchronous, so everything that runs the model returns a
//! promise. The engine's state sits behind `Rc<RefCell>` cells that the promises hold: a call made
//! while another one is computing gets a clear "busy" error instead of a borrow panic, and
//! `start`/`cancel` never wait for the device.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Promise, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::generation::{Backend, Generator, StopReason};
#[cfg(feature = "gpu")]
use crate::gpu::{GpuBackend, GpuContext, GpuOptions, WeightDtype};
use crate::inspect::{self, AttentionCapture, Capture, InspectRequest, Inspection, ThetaSummary};
use crate::model::{CpuDtype, Model, ModelTensors, Projection};
use crate::sampling::SamplingParams;
use crate::tokenizer::{TextStream, Tokenizer};
use crate::weights::WeightsFile;
use crate::CpuBackend;

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn js_value(e: Error) -> JsValue {
    js_error(e).into()
}

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

/// A plain object with these fields.
fn object(fields: &[(&str, JsValue)]) -> std::result::Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    for (key, value) in fields {
        js_sys::Reflect::set(&out, &(*key).into(), value)?;
    }
    Ok(out.into())
}

/// Which backend `Engine.load` uses: WebGPU when an adapter exists ("auto"), or one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendChoice {
    #[default]
    Auto,
    Webgpu,
    Cpu,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DtypeChoice {
    #[default]
    F32,
    F16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LoadOptions {
    backend: BackendChoice,
    /// Weight format on either backend (f16 halves memory; the CPU widens each weight exactly and
    /// accumulates in f32).
    dtype: DtypeChoice,
}

/// Reads an options object; missing and `undefined` fields take their defaults (so
/// `{ top_k: undefined }` means "not given", as JavaScript callers expect).
fn from_js<T: for<'de> Deserialize<'de> + Default>(value: JsValue, what: &str) -> Result<T> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    if !value.is_object() {
        return Err(Error::Usage(format!("{what}: expected an object")));
    }
    let given = js_sys::Object::entries(value.unchecked_ref())
        .filter(&mut |entry, _, _| !js_sys::Array::from(&entry).get(1).is_undefined());
    let given = js_sys::Object::from_entries(&given).map_err(|_| Error::Usage(format!("{what}: unreadable object")))?;
    serde_wasm_bindgen::from_value(given.into()).map_err(|e| Error::Usage(format!("{what}: {e}")))
}

/// The backend an engine runs on.
enum Compute {
    Cpu(CpuBackend),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuBackend>),
}

impl Compute {
    fn reset(&mut self) {
        match self {
            Compute::Cpu(b) => b.reset(),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.reset(),
        }
    }

    async fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu(b) => b.forward(ids, all_logits),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.forward_async(ids, all_logits).await,
        }
    }

    async fn next_token(&mut self, ids: &[u32], context: &[u32], params: &SamplingParams, step: u32) -> Result<u32> {
        match self {
            Compute::Cpu(b) => b.next_token(ids, context, params, step),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.next_token_async(ids, context, params, step).await,
        }
    }

    async fn inspect(&mut self, ids: &[u32], request: &InspectRequest) -> Result<Inspection> {
        match self {
            Compute::Cpu(b) => b.inspect(ids, request),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.inspect_async(ids, request).await,
        }
    }

    /// Top-k and column sums of every Theta map; on WebGPU reduced on the device before read-back.
    async fn summarize(&mut self, ids: &[u32], k: usize) -> Result<Vec<ThetaSummary>> {
        match self {
            Compute::Cpu(b) => {
                let request = InspectRequest::every_theta(&b.model().config);
                Ok(b.inspect(ids, &request)?.theta.iter().map(|c| c.summary(k)).collect())
            }
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => {
                let request = InspectRequest::every_theta(b.config());
                b.summarize_async(ids, &request, k).await
            }
        }
    }

    async fn dictionary(&mut self, layer: usize, proj: Projection, slot: usize) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu(b) => inspect::dictionary(b.model(), layer, proj, slot),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.dictionary_async(layer, proj, slot).await,
        }
    }
}

/// One generation: the generator, its text stream, and whether the backend's cache still holds
/// another sequence (emptied on the first step, so `start` never touches the backend).
struct Run {
    generator: Generator,
    stream: TextStream,
    fresh: bool,
}

struct Shared {
    tokenizer: Tokenizer,
    vocab: usize,
    max_positions: usize,
    /// `None` while a call is computing on it.
    compute: Cell<Option<Compute>>,
    run: RefCell<Option<Run>>,
    /// Bumped by `start`, `cancel` and `logits`: a step that finishes under another epoch drops its token.
    epoch: Cell<u64>,
    /// Why the last generation ended.
    stop: Cell<Option<StopReason>>,
    /// The tokens of the last generation that ended, which live inspection shows once it has.
    finished: RefCell<Vec<u32>>,
}

impl Shared {
    fn busy() -> Error {
        Error::Usage("the engine is busy with another call; await it first".into())
    }

    fn new_epoch(&self) -> u64 {
        self.epoch.set(self.epoch.get() + 1);
        self.epoch.get()
    }

    /// Drops the running generation, if any, as cancelled.
    fn cancel(&self) {
        self.new_epoch();
        if let Some(run) = self.run.take() {
            self.stop.set(Some(StopReason::Cancelled));
            self.finished.replace(run.generator.context().to_vec());
        }
    }

    /// Runs `ids` from an empty cache. The backend is taken out of its cell while it computes,
    /// so a second call meanwhile is refused ([`Shared::busy`]) rather than interleaved.
    async fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut compute = self.compute.take().ok_or_else(Self::busy)?;
        self.cancel();
        compute.reset();
        let logits = compute.forward(ids, true).await;
        self.compute.set(Some(compute));
        logits
    }

    /// The tokens an inspection runs over: `ids` (ending any generation), or with `None` the
    /// running generation's tokens already in the cache, so that inspecting leaves its cache as it
    /// was and the generation goes on (live inspection); after it ended, all its tokens.
    fn inspected_ids(&self, ids: Option<Vec<u32>>) -> Result<Vec<u32>> {
        if let Some(ids) = ids {
            self.cancel();
            return Ok(ids);
        }
        let run = self.run.borrow();
        let ids = match run.as_ref() {
            // Before its first step the cache is still another sequence's: the prompt is what to show.
            Some(run) if run.fresh => run.generator.context().to_vec(),
            Some(run) => run.generator.cached().to_vec(),
            // Just ended (a live update that was queued behind the last step): its final tokens.
            None => self.finished.borrow().clone(),
        };
        if ids.is_empty() {
            return Err(Error::Usage("nothing to inspect: pass ids or start a generation".into()));
        }
        Ok(ids)
    }

    /// One inspected forward pass over `ids` (see [`Shared::inspected_ids`]): the tokens and what
    /// `request` recorded.
    async fn run_inspection(&self, ids: Option<Vec<u32>>, request: InspectRequest) -> Result<(Vec<u32>, Inspection)> {
        let ids = self.inspected_ids(ids)?;
        let inspection = self.with_compute(async |c| c.inspect(&ids, &request).await).await?;
        Ok((ids, inspection))
    }

    /// Runs `f` on the backend, refusing ("busy") while another call computes.
    async fn with_compute<T>(&self, f: impl AsyncFnOnce(&mut Compute) -> Result<T>) -> Result<T> {
        let mut compute = self.compute.take().ok_or_else(Self::busy)?;
        let result = f(&mut compute).await;
        self.compute.set(Some(compute));
        result
    }

    async fn step(&self) -> Result<Option<Token>> {
        let epoch = self.epoch.get();
        let Some(mut run) = self.run.take() else { return Ok(None) };
        let Some(mut compute) = self.compute.take() else {
            self.run.replace(Some(run));
            return Err(Self::busy());
        };
        if run.fresh {
            compute.reset();
            run.fresh = false;
        }
        let sampled = match run.generator.request() {
            Some(r) => Some(compute.next_token(r.feed, r.context, r.params, r.step).await),
            None => None,
        };
        self.compute.set(Some(compute));
        if self.epoch.get() != epoch {
            // Cancelled or restarted meanwhile: this token belongs to nobody.
            return Ok(None);
        }
        let accepted = match sampled {
            Some(id) => run.generator.accept(id?),
            None => None,
        };
        let Some(id) = accepted else {
            self.stop.set(run.generator.stop_reason());
            self.finished.replace(run.generator.context().to_vec());
            return Ok(None);
        };
        let text = run.stream.push(&self.tokenizer, id)?;
        self.run.replace(Some(run));
        Ok(Some(Token { id, text }))
    }
}

/// A loaded model with its tokenizer, KV cache and backend, plus the state of one generation.
#[wasm_bindgen]
pub struct Engine {
    shared: Rc<Shared>,
    backend: &'static str,
    adapter: Option<String>,
    notice: Option<String>,
    parameters: usize,
    config: ModelConfig,
    /// The WebGPU device, kept apart from the backend so it can be released even mid-step.
    #[cfg(feature = "gpu")]
    gpu: Option<Arc<GpuContext>>,
}

/// One generated token: its id and the text it completes (empty while a character is split).
#[wasm_bindgen(getter_with_clone)]
pub struct Token {
    pub id: u32,
    pub text: String,
}

#[wasm_bindgen]
impl Engine {
    /// Builds an engine from a model's three files: `config.json` and `tokenizer.json` as bytes,
    /// the weights (safetensors or the authors' pytorch_model.bin) as a `Uint8Array` or a
    /// `WeightsReader`. The weights are read one tensor at a time and never copied whole into wasm
    /// memory; on WebGPU each tensor goes straight to the device. `options`:
    /// `{ backend?: "auto" | "webgpu" | "cpu", dtype?: "f32" | "f16" }`. With "auto" the engine uses
    /// WebGPU when the browser offers an adapter the model fits, else the CPU, and says why in
    /// `notice`. `onProgress(done, total)`, if given, is called as tensors are decoded.
    pub async fn load(
        config: Vec<u8>,
        weights: WeightsInput,
        tokenizer: Vec<u8>,
        #[wasm_bindgen(unchecked_optional_param_type = "LoadOptions")] options: JsValue,
        #[wasm_bindgen(js_name = onProgress, unchecked_optional_param_type = "(done: number, total: number) => void")]
        on_progress: Option<js_sys::Function>,
    ) -> std::result::Result<Engine, JsError> {
        let options: LoadOptions = from_js(options, "load options").map_err(js_error)?;
        let config = ModelConfig::from_json(&config).map_err(js_error)?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer).map_err(js_error)?;
        let weights = JsWeights::new(weights.into()).map_err(js_error)?;
        let mut progress = |done: usize, total: usize| {
            if let Some(f) = &on_progress {
                // A throwing callback must not abort the load: progress is advisory.
                let _ = f.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into());
            }
        };
        let tensors = ModelTensors::open(config, tokenizer.vocab_size(), &weights, &mut progress).map_err(js_error)?;
        let parameters = tensors.parameters();
        let config = tensors.config().clone();
        let max_positions = config.max_positions;
        let (compute, notice) = open_backend(tensors, &options).await.map_err(js_error)?;
        let backend = match compute {
            Compute::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            Compute::Gpu(_) => "webgpu",
        };
        let adapter = match &compute {
            Compute::Cpu(_) => None,
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => Some(b.context().adapter_name()),
        };
        #[cfg(feature = "gpu")]
        let gpu = match &compute {
            Compute::Gpu(b) => Some(b.context().clone()),
            Compute::Cpu(_) => None,
        };
        let shared = Shared {
            vocab: tokenizer.vocab_size(),
            max_positions,
            tokenizer,
            compute: Cell::new(Some(compute)),
            run: RefCell::new(None),
            epoch: Cell::new(0),
            stop: Cell::new(None),
            finished: RefCell::new(Vec::new()),
        };
        Ok(Engine {
            shared: Rc::new(shared),
            backend,
            adapter,
            notice,
            parameters,
            config,
            #[cfg(feature = "gpu")]
            gpu,
        })
    }

    /// "webgpu" or "cpu".
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.to_string()
    }

    /// The GPU adapter's description, when the backend is WebGPU.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.adapter.clone()
    }

    /// Why "auto" fell back to the CPU, if it did.
    #[wasm_bindgen(getter)]
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.shared.vocab
    }

    /// Blocks of the model (inspector layers are 0..layers).
    #[wasm_bindgen(getter)]
    pub fn layers(&self) -> usize {
        self.config.num_layers
    }

    /// Attention heads per block.
    #[wasm_bindgen(getter)]
    pub fn heads(&self) -> usize {
        self.config.num_heads
    }

    /// Parameter tokens of a projection ("query", "key", "value", "proj" or "ffn").
    pub fn slots(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Projection")] proj: &str,
    ) -> std::result::Result<usize, JsError> {
        Ok(Projection::parse(proj).map_err(js_error)?.slots(&self.config))
    }

    #[wasm_bindgen(getter, js_name = maxPositions)]
    pub fn max_positions(&self) -> usize {
        self.shared.max_positions
    }

    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, JsError> {
        self.shared.tokenizer.encode(text).map_err(js_error)
    }

    pub fn decode(&self, ids: &[u32]) -> std::result::Result<String, JsError> {
        self.shared.tokenizer.decode(ids).map_err(js_error)
    }

    /// Logits of every position of `ids` from an empty cache, [ids.length × vocabSize] row-major.
    /// Ends any running generation.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn logits(&self, ids: Vec<u32>) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let logits = shared.logits(&ids).await.map_err(js_value)?;
            Ok(js_sys::Float32Array::from(logits.as_slice()).into())
        })
    }

    /// Starts a generation after `prompt` ids with sampling `params` (an object with any of
    /// temperature, top_k, top_p, repetition_penalty, seed, max_tokens). Replaces any running one.
    pub fn start(
        &self,
        prompt: &[u32],
        #[wasm_bindgen(unchecked_optional_param_type = "SamplingParams")] params: JsValue,
    ) -> std::result::Result<(), JsError> {
        let s = &self.shared;
        let params: SamplingParams = from_js(params, "sampling parameters").map_err(js_error)?;
        let generator =
            Generator::begin(prompt, &params, s.tokenizer.eos_id(), s.vocab, s.max_positions).map_err(js_error)?;
        s.cancel();
        s.stop.set(None);
        s.run.replace(Some(Run { generator, stream: TextStream::default(), fresh: true }));
        Ok(())
    }

    /// Computes the next token; resolves to `undefined` when the generation has ended
    /// (end-of-text, max_tokens, a full context, or `cancel`).
    #[wasm_bindgen(unchecked_return_type = "Promise<Token | undefined>")]
    pub fn step(&self) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            Ok(match shared.step().await.map_err(js_value)? {
                Some(token) => token.into(),
                None => JsValue::UNDEFINED,
            })
        })
    }

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
            let request = InspectRequest { layers: vec![layer], projections: vec![proj], attention: true };
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

    /// Destroys the engine's WebGPU device now, freeing its memory without waiting for garbage
    /// collection (`free()` also releases it once the engine is collected). Every later call rejects
    /// as after a lost device ("the GPU device was lost … load the model again"), a running
    /// generation included. Also how a lost device is simulated in tests. No effect on the CPU backend.
    #[wasm_bindgen(js_name = releaseGpu)]
    pub fn release_gpu(&self) {
        #[cfg(feature = "gpu")]
        if let Some(ctx) = &self.gpu {
            ctx.device.destroy();
        }
    }

    /// Abandons the running generation, even while a step is computing; the engine stays usable.
    pub fn cancel(&self) {
        self.shared.cancel();
    }

    /// Why the last generation ended: "end_of_text", "max_tokens", "context_full" or
    /// "cancelled"; `undefined` while one is running or before the first.
    #[wasm_bindgen(getter, js_name = stopReason)]
    pub fn stop_reason(&self) -> Option<String> {
        self.shared.stop.get().map(|r| r.as_str().to_string())
    }

    /// Parameters of the model (embedding, parameter tokens, final norm).
    #[wasm_bindgen(getter)]
    pub fn parameters(&self) -> usize {
        self.parameters
    }
}

/// The CPU backend: the whole model decoded into wasm memory in `dtype`, one tensor at a time (so
/// the heap's high-water mark is the model plus one tensor in f32).
fn cpu_backend(tensors: ModelTensors<'_>, dtype: DtypeChoice) -> Result<Compute> {
    let dtype = match dtype {
        DtypeChoice::F32 => CpuDtype::F32,
        DtypeChoice::F16 => CpuDtype::F16,
    };
    // wasm32 addresses 4 GiB: refuse before decoding what cannot fit (the tokenizer and the
    // page's own data need room too).
    let bytes = tensors.parameters() as u64 * dtype.bytes() as u64;
    if bytes > WASM_CPU_LIMIT {
        return Err(Error::Usage(format!(
            "the model's {} parameters take {:.1} GB as {} on the CPU backend, more than the {:.1} GB WebAssembly can \
             hold; load it with f16 weights or on WebGPU",
            tensors.parameters(),
            bytes as f64 / 1e9,
            dtype.as_str(),
            WASM_CPU_LIMIT as f64 / 1e9
        )));
    }
    Ok(Compute::Cpu(CpuBackend::new(Arc::new(Model::from_tensors_as(tensors, dtype)?))))
}

/// The largest model (in bytes of weights) the CPU backend takes in wasm32's 4 GiB address space.
const WASM_CPU_LIMIT: u64 = 3 << 30;

/// The backend `options` ask for, and why "auto" fell back to the CPU if it did. Both read the
/// weights tensor by tensor; the GPU upload keeps one tensor in wasm memory at a time.
#[cfg(feature = "gpu")]
async fn open_backend(tensors: ModelTensors<'_>, options: &LoadOptions) -> Result<(Compute, Option<String>)> {
    if options.backend == BackendChoice::Cpu {
        return Ok((cpu_backend(tensors, options.dtype)?, None));
    }
    let context = match GpuContext::new().await {
        Ok(context) => context,
        Err(e) if options.backend == BackendChoice::Auto => {
            return Ok((
                cpu_backend(tensors, options.dtype)?,
                Some(format!("WebGPU unavailable, running on the CPU: {e}")),
            ));
        }
        Err(e) => return Err(e),
    };
    let dtype = match options.dtype {
        DtypeChoice::F32 => WeightDtype::F32,
        DtypeChoice::F16 => WeightDtype::F16,
    };
    let gpu = GpuBackend::from_file(context, tensors, &GpuOptions { dtype, ..GpuOptions::default() }).await?;
    Ok((Compute::Gpu(Box::new(gpu)), None))
}

#[cfg(not(feature = "gpu"))]
async fn open_backend(tensors: ModelTensors<'_>, options: &LoadOptions) -> Result<(Compute, Option<String>)> {
    if options.backend == BackendChoice::Webgpu {
        return Err(Error::Gpu("this build has no WebGPU backend (built without the `gpu` feature)".into()));
    }
    let notice = (options.backend == BackendChoice::Auto).then(|| "this build has no WebGPU backend".to_string());
    Ok((cpu_backend(tensors, options.dtype)?, notice))
}

#[wasm_bindgen(typescript_custom_section)]
const OPTION_TYPES: &str = r#"
/** How `Engine.load` runs the model: WebGPU when available ("auto", the default), or one backend;
 *  `dtype` is the weights' format on either backend ("f16" halves memory and bandwidth; the CPU
 *  widens each weight exactly and accumulates in f32). */
export interface LoadOptions {
  backend?: "auto" | "webgpu" | "cpu";
  dtype?: "f32" | "f16";
}
/** Sampling as in the CLI: temperature 0 is greedy; top_k 0 and top_p 1 are off. */
export interface SamplingParams {
  temperature?: number;
  top_k?: number;
  top_p?: number;
  repetition_penalty?: number;
  seed?: number;
  max_tokens?: number;
}
"#;

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

#[wasm_bindgen(typescript_custom_section)]
const WEIGHTS_READER: &str = r#"
/** A weights file read in pieces (e.g. a `File` through `FileReaderSync` in a worker):
 *  `read(offset, length)` returns exactly `length` bytes starting at `offset`. */
export interface WeightsReader {
  size: number;
  read(offset: number, length: number): Uint8Array;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// A `Uint8Array` or a `WeightsReader`.
    #[wasm_bindgen(typescript_type = "Uint8Array | WeightsReader")]
    pub type WeightsInput;
}

/// The weights as JavaScript holds them, read one range at a time.
enum JsWeights {
    Bytes(Uint8Array),
    Reader { this: JsValue, read: js_sys::Function, size: u64 },
}

impl JsWeights {
    fn new(value: JsValue) -> Result<Self> {
        let bad = || Error::Usage("weights: expected a Uint8Array or a { size, read(offset, length) } reader".into());
        if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
            return Ok(JsWeights::Bytes(bytes.clone()));
        }
        if !value.is_object() {
            return Err(bad());
        }
        let get = |key: &str| js_sys::Reflect::get(&value, &key.into()).map_err(|_| bad());
        let read = get("read")?.dyn_into::<js_sys::Function>().map_err(|_| bad())?;
        let size = get("size")?.as_f64().filter(|s| s.fract() == 0.0 && *s >= 0.0).ok_or_else(bad)?;
        Ok(JsWeights::Reader { this: value, read, size: size as u64 })
    }
}

impl WeightsFile for JsWeights {
    fn size(&self) -> u64 {
        match self {
            JsWeights::Bytes(b) => b.length() as u64,
            JsWeights::Reader { size, .. } => *size,
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let failed = |message: String| Error::File {
            path: "weights".into(),
            message: format!("bytes {offset}..{end}: {message}"),
        };
        let chunk = match self {
            JsWeights::Bytes(b) => b.subarray(offset as u32, end as u32),
            JsWeights::Reader { this, read, .. } => read
                .call2(this, &(offset as f64).into(), &(buf.len() as f64).into())
                .map_err(|e| failed(format!("the reader failed: {}", js_message(&e))))?
                .dyn_into::<Uint8Array>()
                .map_err(|_| failed("the reader did not return a Uint8Array".into()))?,
        };
        if chunk.length() as usize != buf.len() {
            return Err(failed(format!("got {} bytes", chunk.length())));
        }
        chunk.copy_to(buf);
        Ok(())
    }
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
