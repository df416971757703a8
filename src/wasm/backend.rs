//! Which backend an engine computes on: the load options, the CPU or WebGPU backend they choose,
//! and the one interface (`Compute`) the engine drives either through.

use serde::Deserialize;

use crate::dtype::Dtype;
use crate::error::Result;
use crate::generation::Backend;
#[cfg(feature = "gpu")]
use crate::gpu::GpuBackend;
use crate::inspect::{self, InspectRequest, Inspection, ThetaSummary};
use crate::intervene::Interventions;
use crate::model::Projection;
use crate::sampling::SamplingParams;
use crate::search;
use crate::CpuBackend;
use wasm_bindgen::prelude::*;

/// Which backend `Engine.load` uses: WebGPU when an adapter exists ("auto"), or one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum BackendChoice {
    #[default]
    Auto,
    Webgpu,
    Cpu,
}

/// Which shapes of kernels a WebGPU engine runs: a GPU's, or a CPU adapter's (SwiftShader), which
/// runs workgroups one after another and pays for every barrier; "auto" picks by the adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum KernelsChoice {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum DtypeChoice {
    /// f32 for models of at most [`AUTO_F32_PARAMETERS`] parameters; for larger ones the largest
    /// dtype (f16, q8, q4) whose memory plan fits the budget (see [`DtypeChoice::resolve`]).
    #[default]
    Auto,
    F32,
    F16,
    Q8,
    Q4,
}

/// Up to this many parameters "auto" keeps weights as f32: the exact numbers, at no real cost.
pub(super) const AUTO_F32_PARAMETERS: u64 = 100_000_000;
/// The memory "auto" fits a model in when no `memoryBudget` is given: what a laptop's or a
/// phone's browser can expect to get (WebGPU cannot say how much memory a device has).
#[cfg(feature = "gpu")]
pub(super) const AUTO_BUDGET: u64 = 2 << 30;

impl DtypeChoice {
    /// The dtype a model of `config` with `vocab` ids is stored in, and for "auto" why:
    /// the first of f16, q8, q4 whose `needs(dtype)` (bytes) fits `budget`, q4 if none does.
    pub(super) fn resolve(
        self,
        config: &crate::config::ModelConfig,
        vocab: usize,
        budget: u64,
        needs: impl Fn(Dtype) -> u64,
    ) -> (Dtype, Option<String>) {
        let chosen = match self {
            DtypeChoice::F32 => Dtype::F32,
            DtypeChoice::F16 => Dtype::F16,
            DtypeChoice::Q8 => Dtype::Q8,
            DtypeChoice::Q4 => Dtype::Q4,
            DtypeChoice::Auto => {
                let parameters = config.weight_bytes_per_token(vocab, Dtype::F32, Dtype::F32) as u64 / 4;
                if parameters <= AUTO_F32_PARAMETERS {
                    return (Dtype::F32, None);
                }
                let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
                let fits = [Dtype::F16, Dtype::Q8, Dtype::Q4].into_iter().find(|&d| needs(d) <= budget);
                let dtype = fits.unwrap_or(Dtype::Q4);
                let larger: Vec<String> = [Dtype::F16, Dtype::Q8]
                    .into_iter()
                    .take_while(|&d| d != dtype)
                    .map(|d| format!("{d} needs {}", mb(needs(d))))
                    .collect();
                let why = match (fits, larger.is_empty()) {
                    (Some(_), true) => format!("it needs {} of {}", mb(needs(dtype)), mb(budget)),
                    (Some(_), false) => format!("{}, over {}", larger.join(" and "), mb(budget)),
                    (None, _) => format!("even q4 needs {}, over {}", mb(needs(dtype)), mb(budget)),
                };
                return (dtype, Some(format!("weights as {dtype}: {why}")));
            }
        };
        (chosen, None)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LoadOptions {
    pub(super) backend: BackendChoice,
    /// Weight format on either backend (f16 halves memory, q8 and q4 quantize the parameter tokens;
    /// compute is f32).
    pub(super) dtype: DtypeChoice,
    /// Positions the WebGPU KV cache holds (default: the model's maximum).
    pub(super) context: Option<usize>,
    /// Device bytes a WebGPU model may take; more is refused before the weights are fetched.
    #[serde(rename = "memoryBudget")]
    pub(super) memory_budget: Option<u64>,
    pub(super) kernels: KernelsChoice,
    /// The KV cache's element type, "f32" or "f16" (default on WebGPU: f16 with f16 and quantized
    /// weights, f32 with f32; on the CPU f32).
    #[serde(rename = "kvCache")]
    pub(super) kv_cache: Option<crate::KvDtype>,
}

/// The backend an engine runs on.
pub(super) enum Compute {
    Cpu(CpuBackend),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuBackend>),
}

impl Compute {
    /// Positions the backend holds (a WebGPU KV cache may be shorter than the model allows).
    pub(super) fn max_positions(&self) -> usize {
        match self {
            Compute::Cpu(b) => b.max_positions(),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.max_positions(),
        }
    }

    pub(super) fn reset(&mut self) {
        match self {
            Compute::Cpu(b) => b.reset(),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.reset(),
        }
    }

    pub(super) async fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu(b) => b.forward(ids, all_logits),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.forward_async(ids, all_logits).await,
        }
    }

    pub(super) async fn next_token(
        &mut self,
        ids: &[u32],
        context: &[u32],
        params: &SamplingParams,
        step: u32,
    ) -> Result<u32> {
        match self {
            Compute::Cpu(b) => b.next_token(ids, context, params, step),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.next_token_async(ids, context, params, step).await,
        }
    }

    pub(super) async fn inspect(&mut self, ids: &[u32], request: &InspectRequest) -> Result<Inspection> {
        match self {
            Compute::Cpu(b) => b.inspect(ids, request),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.inspect_async(ids, request).await,
        }
    }

    /// Top-k and column sums of every Theta map; on WebGPU reduced on the device before read-back.
    pub(super) async fn summarize(&mut self, ids: &[u32], k: usize) -> Result<Vec<ThetaSummary>> {
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

    /// Applies `set` from now on; the cache is emptied.
    pub(super) fn set_interventions(&mut self, set: Interventions) {
        match self {
            Compute::Cpu(b) => b.set_interventions(set),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.set_interventions(set),
        }
    }

    /// Every value parameter token's score for `token` (on WebGPU computed on the device).
    pub(super) async fn search(&mut self, token: u32) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu(b) => search::scores(b.model(), token),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.search_async(token).await,
        }
    }

    pub(super) async fn dictionary(&mut self, layer: usize, proj: Projection, slot: usize) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu(b) => inspect::dictionary(b.model(), layer, proj, slot),
            #[cfg(feature = "gpu")]
            Compute::Gpu(b) => b.dictionary_async(layer, proj, slot).await,
        }
    }
}

#[wasm_bindgen(typescript_custom_section)]
const OPTION_TYPES: &str = r#"
/** How `Engine.load` runs the model: WebGPU when available ("auto", the default), or one backend;
 *  `dtype` is the weights' format on either backend ("f16" halves memory and bandwidth; "q8" and
 *  "q4" quantize the parameter tokens to 8.5 and 5 bits a weight, the embedding kept f16; compute
 *  is f32 always). */
export interface LoadOptions {
  backend?: "auto" | "webgpu" | "cpu";
  /** "auto" (the default): f32 up to 100M parameters; above, the largest of f16, q8, q4 whose
   *  memory plan fits `memoryBudget` (default 2 GiB), said in `Engine.notice`. */
  dtype?: "auto" | "f32" | "f16" | "q8" | "q4";
  /** Positions the WebGPU KV cache holds (default: the model's maximum). */
  context?: number;
  /** Device bytes a WebGPU model may take: a model that needs more is refused before its weights
   *  are fetched, with what would fit (`Engine.planMemory` gives the numbers). */
  memoryBudget?: number;
  /** WebGPU kernels shaped for a GPU or for a CPU adapter (SwiftShader, which runs workgroups one
   *  after another); "auto" (the default) picks by the adapter. */
  kernels?: "auto" | "gpu" | "cpu";
  /** The KV cache: "f16" (half the memory; on WebGPU the default with f16, q8 and q4 weights) or
   *  "f32" (the exact numbers; the default with f32 weights and on the CPU). */
  kvCache?: "f32" | "f16";
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
