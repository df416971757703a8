//! Loading as the bytes arrive: `Engine.beginLoad` opens the backend from config and tokenizer,
//! then the weights file is pushed chunk by chunk (a download, a file read front to back) into a
//! [`ModelLoader`], which decodes each tensor's rows straight into the backend's own storage.

#[cfg(feature = "gpu")]
use std::sync::Arc;

use wasm_bindgen::prelude::*;

use super::backend::{BackendChoice, Compute, DtypeChoice, LoadOptions};
use super::{js_error, Engine};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::{GpuContext, GpuLoader, GpuOptions, WeightDtype};
use crate::model::{CpuDtype, ModelBuilder};
use crate::tokenizer::Tokenizer;
use crate::weights::copy::SafetensorsCopy;
use crate::weights::stream::{TensorInfo, TensorSink, WeightStream};
use crate::CpuBackend;

/// The largest model (in bytes of weights) the CPU backend takes in wasm32's 4 GiB address space.
const WASM_CPU_LIMIT: u64 = 3 << 30;

/// Where the streamed tensors go.
enum LoadSink {
    Cpu {
        builder: ModelBuilder<'static>,
        dtype: CpuDtype,
    },
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
            LoadSink::Cpu { builder, dtype } => {
                // Refuse before allocating what cannot fit (the tokenizer and the page need room too).
                let parameters = parameters(tensors);
                let bytes = parameters * dtype.bytes() as u64;
                if bytes > WASM_CPU_LIMIT {
                    return Err(Error::Usage(format!(
                        "the model's {parameters} parameters take {:.1} GB as {} on the CPU backend, more than \
                         the {:.1} GB WebAssembly can hold; load it with f16 weights or on WebGPU",
                        bytes as f64 / 1e9,
                        dtype.as_str(),
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
            LoadSink::Cpu { builder, .. } => builder.rows(index, row0, values),
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => loader.rows(index, row0, values),
        }
    }
}

impl LoadSink {
    /// Whether the backend stores its matrices as f16.
    fn f16(&self) -> bool {
        match self {
            LoadSink::Cpu { dtype, .. } => *dtype == CpuDtype::F16,
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => loader.dtype() == WeightDtype::F16,
        }
    }

    async fn into_compute(self) -> Result<Compute> {
        Ok(match self {
            LoadSink::Cpu { builder, .. } => Compute::Cpu(CpuBackend::new(std::sync::Arc::new(builder.finish()?))),
            #[cfg(feature = "gpu")]
            LoadSink::Gpu(loader) => Compute::Gpu(Box::new(loader.finish().await?)),
        })
    }
}

fn cpu_sink(config: &ModelConfig, vocab: usize, dtype: DtypeChoice) -> LoadSink {
    let dtype = if dtype.is_f16(config, vocab) { CpuDtype::F16 } else { CpuDtype::F32 };
    LoadSink::Cpu { builder: ModelBuilder::new(config.clone(), vocab, dtype, None), dtype }
}

/// The sink `options` ask for, and why "auto" fell back to the CPU if it did.
#[cfg(feature = "gpu")]
async fn open_sink(config: &ModelConfig, vocab: usize, options: &LoadOptions) -> Result<(LoadSink, Option<String>)> {
    if options.backend == BackendChoice::Cpu {
        return Ok((cpu_sink(config, vocab, options.dtype), None));
    }
    let context: Arc<GpuContext> = match GpuContext::new().await {
        Ok(context) => context,
        Err(e) if options.backend == BackendChoice::Auto => {
            let notice = format!("WebGPU unavailable, running on the CPU: {e}");
            return Ok((cpu_sink(config, vocab, options.dtype), Some(notice)));
        }
        Err(e) => return Err(e),
    };
    let dtype = if options.dtype.is_f16(config, vocab) { WeightDtype::F16 } else { WeightDtype::F32 };
    let gpu_shapes = match options.kernels {
        super::backend::KernelsChoice::Auto => None,
        super::backend::KernelsChoice::Gpu => Some(true),
        super::backend::KernelsChoice::Cpu => Some(false),
    };
    let min_workgroups = gpu_shapes.map(|gpu| if gpu { crate::gpu::MIN_WORKGROUPS } else { 1 });
    let gpu_options = GpuOptions {
        dtype,
        context: options.context,
        memory_budget: options.memory_budget,
        gpu_shapes,
        min_workgroups,
        ..GpuOptions::default()
    };
    let loader = GpuLoader::new(context, config.clone(), vocab, &gpu_options).await?;
    Ok((LoadSink::Gpu(Box::new(loader)), None))
}

#[cfg(not(feature = "gpu"))]
async fn open_sink(config: &ModelConfig, vocab: usize, options: &LoadOptions) -> Result<(LoadSink, Option<String>)> {
    if options.backend == BackendChoice::Webgpu {
        return Err(Error::Gpu("this build has no WebGPU backend (built without the `gpu` feature)".into()));
    }
    let notice = (options.backend == BackendChoice::Auto).then(|| "this build has no WebGPU backend".to_string());
    Ok((cpu_sink(config, vocab, options.dtype), notice))
}

/// A sink that also counts the model's parameters (what `Engine.parameters` reports) and, when
/// asked, writes a safetensors copy in the backend's dtype (what the page caches).
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
}

/// A model being loaded: push the weights file's bytes in order, then `finish`.
#[wasm_bindgen]
pub struct ModelLoader {
    stream: WeightStream,
    sink: Counted,
    tokenizer: Tokenizer,
    config: ModelConfig,
    notice: Option<String>,
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
        let (sink, notice) = open_sink(&config, tokenizer.vocab_size(), &options).await?;
        let sink = Counted { sink, parameters: 0, copy: None };
        Ok(ModelLoader { stream: WeightStream::new(size), sink, tokenizer, config, notice })
    }

    pub(super) fn push_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.push(bytes, &mut self.sink)
    }

    pub(super) async fn into_engine(self) -> Result<Engine> {
        self.stream.finish()?;
        let parameters = self.sink.parameters as usize;
        let compute = self.sink.sink.into_compute().await?;
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

    /// "f16" or "f32": how the backend stores the matrices (what "auto" chose).
    #[wasm_bindgen(getter)]
    pub fn dtype(&self) -> String {
        if self.sink.sink.f16() { "f16" } else { "f32" }.to_string()
    }

    /// Also writes a safetensors copy of the weights in the backend's dtype (call before the first
    /// push): `takeCopy()` after each push gives its writes.
    #[wasm_bindgen(js_name = keepCopy)]
    pub fn keep_copy(&mut self) {
        self.sink.copy = Some(SafetensorsCopy::new(self.sink.sink.f16()));
    }

    /// The copy's writes since the last call: `[position, bytes, position, bytes, ...]`.
    #[wasm_bindgen(js_name = takeCopy)]
    pub fn take_copy(&mut self) -> js_sys::Array {
        let out = js_sys::Array::new();
        for (at, bytes) in self.sink.copy.as_mut().map(SafetensorsCopy::take).unwrap_or_default() {
            out.push(&JsValue::from(at as f64));
            out.push(&js_sys::Uint8Array::from(&bytes[..]));
        }
        out
    }

    /// The copy's size in bytes and CRC-32 (complete once every byte was pushed).
    #[wasm_bindgen(js_name = copySize, getter)]
    pub fn copy_size(&self) -> f64 {
        self.sink.copy.as_ref().map_or(0, SafetensorsCopy::size) as f64
    }

    #[wasm_bindgen(js_name = copyChecksum, getter)]
    pub fn copy_checksum(&self) -> u32 {
        self.sink.copy.as_ref().map_or(0, SafetensorsCopy::checksum)
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
