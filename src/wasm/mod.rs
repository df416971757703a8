//! The JavaScript API (wasm-bindgen). Every fallible call returns a rejected promise / thrown
//! `Error` with the crate's message; nothing panics across the boundary.
//!
//! The GPU backend's read-backs are asynchronous, so everything that runs the model returns a
//! promise. The engine's state sits behind `Rc<RefCell>` cells that the promises hold: a call made
//! while another one is computing gets a clear "busy" error instead of a borrow panic, and
//! `start`/`cancel` never wait for the device.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
#[cfg(feature = "gpu")]
use std::sync::Arc;

use js_sys::Promise;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::generation::{Generator, StopReason};
#[cfg(feature = "gpu")]
use crate::gpu::GpuContext;
use crate::inspect::{InspectRequest, Inspection};
use crate::intervene::Interventions;
use crate::model::Projection;
use crate::sampling::SamplingParams;
use crate::tokenizer::{TextStream, Tokenizer};
use crate::weights::WeightsFile;

mod actions;
mod backend;
mod inspection;
mod loader;
mod weights;

use backend::Compute;
pub use loader::ModelLoader;
use weights::{JsWeights, WeightsInput};

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn js_value(e: Error) -> JsValue {
    js_error(e).into()
}

/// A plain object with these fields.
fn object(fields: &[(&str, JsValue)]) -> std::result::Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    for (key, value) in fields {
        js_sys::Reflect::set(&out, &(*key).into(), value)?;
    }
    Ok(out.into())
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
    /// Forward passes run so far (prefills, decoded tokens, inspections), for callers that check
    /// what an action costs.
    passes: Cell<u64>,
    /// The interventions every pass applies.
    interventions: RefCell<Interventions>,
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

    /// Runs `ids` from an empty cache, with the logits of every position (`all`) or of the last.
    /// The backend is taken out of its cell while it computes, so a second call meanwhile is refused
    /// ([`Shared::busy`]) rather than interleaved.
    async fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        let mut compute = self.compute.take().ok_or_else(Self::busy)?;
        self.cancel();
        compute.reset();
        self.count_pass();
        let logits = compute.forward(ids, all).await;
        self.compute.set(Some(compute));
        logits
    }

    fn count_pass(&self) {
        self.passes.set(self.passes.get() + 1);
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
        self.count_pass();
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
            Some(r) => {
                self.count_pass();
                Some(compute.next_token(r.feed, r.context, r.params, r.step).await)
            }
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

impl Engine {
    fn new(
        compute: Compute,
        tokenizer: Tokenizer,
        config: ModelConfig,
        parameters: usize,
        notice: Option<String>,
    ) -> Engine {
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
            max_positions: compute.max_positions(),
            tokenizer,
            compute: Cell::new(Some(compute)),
            run: RefCell::new(None),
            epoch: Cell::new(0),
            stop: Cell::new(None),
            finished: RefCell::new(Vec::new()),
            passes: Cell::new(0),
            interventions: RefCell::new(Interventions::default()),
        };
        Engine {
            shared: Rc::new(shared),
            backend,
            adapter,
            notice,
            parameters,
            config,
            #[cfg(feature = "gpu")]
            gpu,
        }
    }
}

#[wasm_bindgen]
impl Engine {
    /// Builds an engine from a model's three files: `config.json` and `tokenizer.json` as bytes,
    /// the weights (safetensors or the authors' pytorch_model.bin) as a `Uint8Array` or a
    /// `WeightsReader`. The weights are read front to back in 1 MiB pieces, each tensor decoded
    /// into the backend's storage as it comes (on WebGPU straight to the device), so they are never
    /// copied whole into wasm memory. `options`: `{ backend?: "auto" | "webgpu" | "cpu", dtype?:
    /// "auto" | "f32" | "f16" | "q8" | "q4" }` (see `LoadOptions`). With "auto" the engine uses
    /// WebGPU when the browser offers an adapter, else the CPU, and says why in `notice` (and which
    /// dtype "auto" chose, and why). `onProgress(done, total)`, if given, is called with
    /// the bytes read so far.
    pub async fn load(
        config: Vec<u8>,
        weights: WeightsInput,
        tokenizer: Vec<u8>,
        #[wasm_bindgen(unchecked_optional_param_type = "LoadOptions")] options: JsValue,
        #[wasm_bindgen(js_name = onProgress, unchecked_optional_param_type = "(done: number, total: number) => void")]
        on_progress: Option<js_sys::Function>,
    ) -> std::result::Result<Engine, JsError> {
        let weights = JsWeights::new(weights.into()).map_err(js_error)?;
        let size = weights.size();
        let mut loader = ModelLoader::open(&config, &tokenizer, options, Some(size as f64)).await.map_err(js_error)?;
        let mut piece = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(piece.len() as u64) as usize;
            weights.read_at(at, &mut piece[..n]).map_err(js_error)?;
            loader.push_bytes(&piece[..n]).map_err(js_error)?;
            at += n as u64;
            if let Some(f) = &on_progress {
                // A throwing callback must not abort the load: progress is advisory.
                let _ = f.call2(&JsValue::NULL, &(at as f64).into(), &(size as f64).into());
            }
        }
        loader.into_engine().await.map_err(js_error)
    }

    /// What a model of `config` (config.json's bytes) needs on a WebGPU device with `dtype`
    /// ("f32" | "f16" | "q8" | "q4"; the embedding f16 with q8 and q4, and the KV cache f16 with all
    /// but f32) weights, known before any
    /// weights are fetched: `{ weights, kvCache, activations, total }` in bytes, for a tokenizer of
    /// `vocabSize` ids.
    #[cfg(feature = "gpu")]
    #[wasm_bindgen(js_name = planMemory)]
    pub fn plan_memory(
        config: &[u8],
        #[wasm_bindgen(js_name = vocabSize)] vocab_size: usize,
        dtype: &str,
    ) -> std::result::Result<JsValue, JsError> {
        let config = ModelConfig::from_json(config).map_err(js_error)?;
        let dtype = crate::Dtype::parse(dtype).map_err(js_error)?;
        let plan = crate::gpu::DeviceMemory::planned(&config, vocab_size, dtype);
        let field = |bytes: u64| JsValue::from(bytes as f64);
        object(&[
            ("weights", field(plan.weights)),
            ("kvCache", field(plan.kv_cache)),
            ("activations", field(plan.activations)),
            ("total", field(plan.total())),
        ])
        .map_err(|_| JsError::new("cannot build the memory plan object"))
    }

    /// Starts loading a model whose weights will be pushed as they arrive (see `ModelLoader`):
    /// `config.json` and `tokenizer.json` as bytes, the weights file's size when known (it lets
    /// errors name it; `undefined` if not), and the load options. Opens the backend first, so a missing WebGPU adapter
    /// shows before any weights are fetched.
    #[wasm_bindgen(js_name = beginLoad)]
    pub async fn begin_load(
        config: Vec<u8>,
        tokenizer: Vec<u8>,
        size: Option<f64>,
        #[wasm_bindgen(unchecked_optional_param_type = "LoadOptions")] options: JsValue,
    ) -> std::result::Result<ModelLoader, JsError> {
        ModelLoader::open(&config, &tokenizer, options, size).await.map_err(js_error)
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
            let logits = shared.logits(&ids, true).await.map_err(js_value)?;
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
