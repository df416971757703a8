//! Loading as the bytes arrive: `Engine.beginLoad` opens the backend from config and tokenizer,
//! then the weights file is pushed chunk by chunk (a download, a file read front to back) into a
//! [`ModelLoader`], which decodes each tensor's rows straight into the backend's own storage.

#[cfg(feature = "gpu")]
use std::sync::Arc;

use wasm_bindgen::prelude::*;

#[cfg(feature = "gpu")]
use super::backend::AUTO_BUDGET;
use super::backend::{BackendChoice, Compute, LoadOptions};
use super::{js_error, Engine};
use crate::config::ModelConfig;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::{DeviceMemory, GpuContext, GpuLoader, GpuOptions};
use crate::model::{Converter, ModelBuilder};
use crate::tokenizer::Tokenizer;
use crate::weights::copy::SafetensorsCopy;
use crate::weights::stream::{TensorInfo, TensorSink, WeightStream};
use crate::CpuBackend;

/// The largest model (in bytes of weights) the CPU backend takes in wasm32's 4 GiB address space.
const WASM_CPU_LIMIT: u64 = 3 << 30;

/// Where the streamed tensors go, in the dtypes a [`Converter`] in front announces.
enum LoadSink {
    Cpu(ModelBuilder<'static>),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuLoader>),
}

/// Values in all of a file's tensors.
fn parameters(tensors: &[TensorInfo]) -> u64 {
    tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum()
}

impl TensorSink for LoadSink {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        match self {
            LoadSink::Cpu(builder) => {
                // Refuse before allocating what cannot fit (the tokenizer and the page need room too).
                let bytes: u64 = tensors.iter().map(|t| (t.rows() * t.dtype.row_bytes(t.cols())) as u64).sum();
                if bytes > WASM_CPU_LIMIT {
                    return Err(Error::Usage(format!(
                        "the model's {} parameters take {:.1} GB on the CPU backend as loaded, more than the \
                         {:.1} GB WebAssembly can hold; load it with q4 weights or on WebGPU",
                        parameters(tensors),
                        bytes as f64 / 1e9,
                        WASM_CPU_LIMIT as f64 / 1e9
                    )));
                }
                builder.begin(tensors)
            }
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => loader.begin(tensors),
        }
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        match self {
            LoadSink::Cpu(builder) => builder.rows(index, row0, values),
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => loader.rows(index, row0, values),
        }
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        match self {
            LoadSink::Cpu(builder) => builder.blocks(index, row0, blocks),
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => loader.blocks(index, row0, blocks),
        }
    }
}

impl LoadSink {
    async fn into_compute(self) -> Result<Compute> {
        Ok(match self {
            LoadSink::Cpu(builder) => Compute::Cpu(CpuBackend::new(std::sync::Arc::new(builder.finish()?))),
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => Compute::Gpu(Box::new(loader.finish().await?)),
        })
    }
}

/// The CPU backend's sink and the dtype `options` choose for it (with why, for "auto").
fn cpu_sink(config: &ModelConfig, vocab: usize, options: &LoadOptions) -> (LoadSink, Dtype, Option<String>) {
    let needs = |d: Dtype| config.weight_bytes_per_token(vocab, d, d.default_embedding()) as u64;
    let (dtype, why) = options.dtype.resolve(config, vocab, WASM_CPU_LIMIT, needs);
    (LoadSink::Cpu(ModelBuilder::new(config.clone(), vocab, None)), dtype, why)
}

/// Both reasons, where there are two.
fn join(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// The sink `options` ask for, the dtype it stores, and why "auto" chose the backend or the dtype
/// it did.
#[cfg(feature = "gpu")]
async fn open_sink(
    config: &ModelConfig,
    vocab: usize,
    options: &LoadOptions,
) -> Result<(LoadSink, Dtype, Option<String>)> {
    if options.backend == BackendChoice::Cpu {
        return Ok(cpu_sink(config, vocab, options));
    }
    let context: Arc<GpuContext> = match GpuContext::new().await {
        Ok(context) => context,
        Err(e) if options.backend == BackendChoice::Auto => {
            let (sink, dtype, why) = cpu_sink(config, vocab, options);
            return Ok((sink, dtype, join(Some(format!("WebGPU unavailable, running on the CPU: {e}")), why)));
        }
        Err(e) => return Err(e),
    };
    let planned = ModelConfig {
        max_positions: options.context.map_or(config.max_positions, |c| c.min(config.max_positions)),
        ..config.clone()
    };
    let needs = |d: Dtype| DeviceMemory::planned(&planned, vocab, d).total();
    let (dtype, why) = options.dtype.resolve(config, vocab, options.memory_budget.unwrap_or(AUTO_BUDGET), needs);
    let gpu_shapes = match options.kernels {
        super::backend::KernelsChoice::Auto => None,
        super::backend::KernelsChoice::Gpu => Some(true),
        super::backend::KernelsChoice::Cpu => Some(false),
    };
    let min_workgroups = gpu_shapes.map(|gpu| if gpu { crate::gpu::MIN_WORKGROUPS } else { 1 });
    let gpu_options = GpuOptions {
        dtype,
        kv_cache: options.kv_cache,
        context: options.context,
        memory_budget: options.memory_budget,
        gpu_shapes,
        min_workgroups,
        ..GpuOptions::default()
    };
    let loader = GpuLoader::new(context, config.clone(), vocab, &gpu_options).await?;
    Ok((LoadSink::Gpu(Box::new(loader)), dtype, why))
}

#[cfg(not(feature = "gpu"))]
async fn open_sink(
    config: &ModelConfig,
    vocab: usize,
    options: &LoadOptions,
) -> Result<(LoadSink, Dtype, Option<String>)> {
    if options.backend == BackendChoice::Webgpu {
        return Err(Error::Gpu("this build has no WebGPU backend (built without the `gpu` feature)".into()));
    }
    let notice = (options.backend == BackendChoice::Auto).then(|| "this build has no WebGPU backend".to_string());
    let (sink, dtype, why) = cpu_sink(config, vocab, options);
    Ok((sink, dtype, join(notice, why)))
}

/// A sink that also counts the model's parameters (what `Engine.parameters` reports) and, when
/// asked, writes a safetensors copy in the backend's dtypes (what the page caches).
struct Counted {
    sink: LoadSink,
    parameters: u64,
    copy: Option<SafetensorsCopy>,
}

impl TensorSink for Counted {
    fn begin(&mut self, tensors: &[TensorInfo]) -> Result<()> {
        self.parameters = parameters(tensors);
        self.sink.begin(tensors)?;
        match &mut self.copy {
            Some(copy) => copy.begin(tensors),
            None => Ok(()),
        }
    }

    fn rows(&mut self, index: usize, row0: usize, values: &[f32]) -> Result<()> {
        self.sink.rows(index, row0, values)?;
        match &mut self.copy {
            Some(copy) => copy.rows(index, row0, values),
            None => Ok(()),
        }
    }

    fn blocks(&mut self, index: usize, row0: usize, blocks: &[u8]) -> Result<()> {
        self.sink.blocks(index, row0, blocks)?;
        match &mut self.copy {
            Some(copy) => copy.blocks(index, row0, blocks),
            None => Ok(()),
        }
    }
}

/// A model being loaded: push the weights file's bytes in order, then `finish`.
#[wasm_bindgen]
pub struct ModelLoader {
    stream: WeightStream,
    sink: Converter<Counted>,
    /// How the backend stores the parameter tokens.
    dtype: Dtype,
    tokenizer: Tokenizer,
    config: ModelConfig,
    notice: Option<String>,
    /// The KV cache the options ask for (the CPU backend's; the GPU's is built with it).
    kv_cache: Option<crate::KvDtype>,
}

impl ModelLoader {
    pub(super) async fn open(
        config: &[u8],
        tokenizer: &[u8],
        options: JsValue,
        size: Option<f64>,
    ) -> Result<ModelLoader> {
        let options: LoadOptions = super::from_js(options, "load options")?;
        let config = ModelConfig::from_json(config)?;
        let tokenizer = Tokenizer::from_bytes(tokenizer)?;
        let size = match size {
            Some(s) if s.fract() == 0.0 && s >= 0.0 => Some(s as u64),
            Some(s) => return Err(Error::Usage(format!("weights size {s} is not a byte count"))),
            None => None,
        };
        let vocab = tokenizer.vocab_size();
        let (sink, dtype, notice) = open_sink(&config, vocab, &options).await?;
        let sink = Converter::new(config.clone(), vocab, dtype, None, Counted { sink, parameters: 0, copy: None });
        let kv_cache = options.kv_cache;
        Ok(ModelLoader { stream: WeightStream::new(size), sink, dtype, tokenizer, config, notice, kv_cache })
    }

    pub(super) fn push_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.push(bytes, &mut self.sink)
    }

    pub(super) async fn into_engine(self) -> Result<Engine> {
        self.stream.finish()?;
        let counted = self.sink.finish()?;
        let parameters = counted.parameters as usize;
        let mut compute = counted.sink.into_compute().await?;
        if let (Compute::Cpu(cpu), Some(kv)) = (&mut compute, self.kv_cache) {
            cpu.set_kv_cache(kv);
        }
        Ok(Engine::new(compute, self.tokenizer, self.config, parameters, self.notice))
    }
}

#[wasm_bindgen]
impl ModelLoader {
    /// The next bytes of the weights file (any chunk size). Throws on malformed or unexpected
    /// data; after an error the loader takes nothing more.
    pub fn push(&mut self, bytes: &[u8]) -> std::result::Result<(), JsError> {
        self.push_bytes(bytes).map_err(js_error)
    }

    /// Bytes taken so far.
    #[wasm_bindgen(getter)]
    pub fn position(&self) -> f64 {
        self.stream.position() as f64
    }

    /// "f32", "f16", "q8" or "q4": how the backend stores the parameter tokens (what "auto"
    /// chose; the embedding is f16 with q8 and q4).
    #[wasm_bindgen(getter)]
    pub fn dtype(&self) -> String {
        self.dtype.as_str().to_string()
    }

    /// Also writes a safetensors copy of the weights in the backend's dtypes (call before the
    /// first push): `takeCopy()` after each push gives its writes.
    #[wasm_bindgen(js_name = keepCopy)]
    pub fn keep_copy(&mut self) {
        self.sink.sink_mut().copy = Some(SafetensorsCopy::new());
    }

    /// The copy's writes since the last call: `[position, bytes, position, bytes, ...]`.
    #[wasm_bindgen(js_name = takeCopy)]
    pub fn take_copy(&mut self) -> js_sys::Array {
        let out = js_sys::Array::new();
        for (at, bytes) in self.sink.sink_mut().copy.as_mut().map(SafetensorsCopy::take).unwrap_or_default() {
            out.push(&JsValue::from(at as f64));
            out.push(&js_sys::Uint8Array::from(&bytes[..]));
        }
        out
    }

    /// The copy's size in bytes and CRC-32 (complete once every byte was pushed).
    #[wasm_bindgen(js_name = copySize, getter)]
    pub fn copy_size(&self) -> f64 {
        self.sink.sink().copy.as_ref().map_or(0, SafetensorsCopy::size) as f64
    }

    #[wasm_bindgen(js_name = copyChecksum, getter)]
    pub fn copy_checksum(&self) -> u32 {
        self.sink.sink().copy.as_ref().map_or(0, SafetensorsCopy::checksum)
    }

    /// CRC-32 of the bytes pushed so far (what a cached copy of the file is checked against).
    #[wasm_bindgen(getter)]
    pub fn checksum(&self) -> u32 {
        self.stream.checksum()
    }

    /// The end of the file: checks that every tensor arrived and returns the engine.
    pub async fn finish(self) -> std::result::Result<Engine, JsError> {
        self.into_engine().await.map_err(js_error)
    }
}
