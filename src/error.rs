//! One error type for the whole crate. Every message names the file or value at fault so that a
//! person can fix the input without reading the code.

use crate::weights::pytorch::PytorchError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config.json is not valid JSON for a TokenFormer model: {0}")]
    ConfigJson(#[from] serde_json::Error),
    #[error("config.json: {0}")]
    Config(String),

    #[error("weights file is empty")]
    EmptyWeights,
    #[error("weights file is neither a PyTorch zip archive nor safetensors: {0}")]
    UnknownWeightsFormat(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("pytorch_model.bin: {0}")]
    Pytorch(#[from] PytorchError),
    #[error("weights mix the authors' names (sequential.N...) with the project's names: {0} and {1}")]
    MixedNaming(String, String),
    #[error("missing tensor {0}")]
    MissingTensor(String),
    #[error("unexpected tensor {0} (not part of a TokenFormer model with this config)")]
    UnexpectedTensor(String),
    #[error("tensor {name} has shape {found:?}, expected {expected}")]
    TensorShape { name: String, found: Vec<usize>, expected: String },
    #[error("tensor {name} has dtype {dtype}; supported: F32, F16, BF16, and U8 blocks named NAME.q8 or NAME.q4")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor {name} needs {bytes} bytes as f32, more memory than is available")]
    OutOfMemory { name: String, bytes: u64 },
    #[error("tensor {name} holds a non-finite value (NaN or infinity)")]
    NonFinite { name: String },
    #[error("tensor {name}: {message}")]
    BadBlocks { name: String, message: String },

    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("the tokenizer has {tokenizer} ids but the embedding has only {embedding} rows")]
    VocabTooLarge { tokenizer: usize, embedding: usize },

    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    #[error("{needed} positions are needed but the model has at most {max} (max_position_embeddings)")]
    TooManyPositions { needed: usize, max: usize },
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("invalid sampling parameter: {0}")]
    Sampling(String),

    #[error("layer {layer} is out of range: the model has {layers} layers, numbered 0 to {}", .layers.saturating_sub(1))]
    LayerOutOfRange { layer: usize, layers: usize },
    #[error("unknown projection {0:?}: expected one of query, key, value, proj, ffn")]
    UnknownProjection(String),
    #[error("parameter token {slot} is out of range: layer {layer} {proj} has {slots}, numbered 0 to {}", .slots.saturating_sub(1))]
    SlotOutOfRange { layer: usize, proj: &'static str, slot: usize, slots: usize },

    #[error("GPU: {0}")]
    Gpu(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Usage(String),
}
