//! How the KV cache holds keys and values on the device: f32, or f16 packed two per u32 (half the
//! memory: the 1.5B model's 2,048 positions take 0.5 GB instead of 1.0). The kernels that read or
//! write the caches (RoPE's append, both attention kernels, the inspector's probabilities) take the
//! prelude `shaders/kv_{f32,f16}.wgsl`, which says what a word and a quad of the cache are.

/// The cache's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    /// Needs even head dims: a u32 holds two dims of one head.
    F16,
}

impl KvDtype {
    /// The default for weights in `dtype` and heads of `head_dim`: f16 with f16 or quantized
    /// weights (what the memory is for; its rounding is smaller than theirs), f32 with f32 weights
    /// (the exact path) and for odd head dims.
    pub fn default_for(dtype: crate::Dtype, head_dim: usize) -> KvDtype {
        match dtype {
            crate::Dtype::F32 => KvDtype::F32,
            _ if head_dim % 2 == 1 => KvDtype::F32,
            _ => KvDtype::F16,
        }
    }

    pub fn parse(name: &str) -> crate::Result<KvDtype> {
        match name {
            "f32" => Ok(KvDtype::F32),
            "f16" => Ok(KvDtype::F16),
            _ => Err(crate::Error::Usage(format!("unknown KV cache dtype {name:?} (f32 or f16)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

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
            KvDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
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
