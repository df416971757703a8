//! How the KV cache holds keys and values on the device: f32, or f16 packed two per u32 (half the
//! memory: the 1.5B model's 2,048 positions take 0.5 GB instead of 1.0). The kernels that read or
//! write the caches (RoPE's append, both attention kernels, the inspector's probabilities) take the
//! prelude `shaders/kv_{f32,f16}.wgsl`, which says what a word and a quad of the cache are.

pub use crate::dtype::KvDtype;

impl KvDtype {
    pub(crate) fn prelude(self) -> &'static str {
        match self {
            KvDtype::F32 => include_str!("../../shaders/kv_f32.wgsl"),
            KvDtype::F16 => include_str!("../../shaders/kv_f16.wgsl"),
        }
    }

    /// Dims per word of the cache (each RoPE thread appends one word).
    pub(crate) fn elems(self) -> usize {
        4 / self.bytes()
    }

    /// `values` as the cache stores them (for tests that fill or read a cache).
    #[cfg(test)]
    pub(crate) fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            KvDtype::F32 => super::context::f32_bytes(values),
            KvDtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        }
    }

    /// The cache's bytes as f32 (for tests).
    #[cfg(test)]
    pub(crate) fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            KvDtype::F32 => super::context::bytes_to_f32(bytes),
            KvDtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        }
    }
}
