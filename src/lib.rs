//! TokenFormer inference: the exact computation of the authors' released models
//! (docs/numerics.md, "What is computed"), their files loaded unchanged, a CPU reference backend, and sampling
//! that gives the same tokens on every backend.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod config;
pub mod convert;
pub mod cpu;
#[cfg(feature = "cli")]
pub mod default_model;
pub mod dtype;
pub mod error;
pub mod fuzzing;
pub mod generation;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod inspect;
pub mod intervene;
pub mod lens;
pub mod loader;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod search;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;

pub use config::{ModelConfig, NormActivation};
pub use cpu::CpuBackend;
pub use dtype::{Dtype, KvDtype};
pub use error::{Error, Result};
pub use generation::{generate, perplexity, Backend, Generation, StopReason};
pub use inspect::{AttentionCapture, Capture, InspectRequest, Inspection};
pub use intervene::{Intervention, Interventions};
pub use lens::LogitLens;
pub use model::{Model, Projection, WeightData};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;
