//! The model's shape, read from the authors' `config.json` keys exactly as they ship them.

use serde::Deserialize;

use crate::dtype::Dtype;
use crate::error::{Error, Result};

/// The five Pattention layers of a block, in the order the inspector lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    Query,
    Key,
    Value,
    Proj,
    Ffn,
}

impl Projection {
    pub const ALL: [Projection; 5] = [Self::Query, Self::Key, Self::Value, Self::Proj, Self::Ffn];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Key => "key",
            Self::Value => "value",
            Self::Proj => "proj",
            Self::Ffn => "ffn",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| Error::UnknownProjection(name.to_string()))
    }

    /// Number of parameter tokens of this projection.
    pub fn slots(self, cfg: &ModelConfig) -> usize {
        match self {
            Self::Query | Self::Key | Self::Value => cfg.qkv_slots,
            Self::Proj => cfg.proj_slots,
            Self::Ffn => cfg.ffn_slots,
        }
    }
}

/// The row-wise normalisation `f` of Pattention scores (`norm_activation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormActivation {
    /// `gelu(S / ||S||_2 * sqrt(n))` — every released checkpoint uses this.
    L2NormGelu,
    /// `gelu(S) / ||gelu(S)||_2 * sqrt(n)`
    GeluL2Norm,
    /// `n * softmax(S)`
    Softmax,
}

impl NormActivation {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "l2_norm_gelu" => Ok(Self::L2NormGelu),
            "gelu_l2_norm" => Ok(Self::GeluL2Norm),
            "softmax" => Ok(Self::Softmax),
            other => Err(Error::Config(format!(
                "unknown norm_activation_type {other:?} (known: l2_norm_gelu, gelu_l2_norm, softmax)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::L2NormGelu => "l2_norm_gelu",
            Self::GeluL2Norm => "gelu_l2_norm",
            Self::Softmax => "softmax",
        }
    }
}

/// The keys of the authors' `config.json` that inference needs; all others are ignored.
#[derive(Debug, Deserialize)]
struct AuthorsConfig {
    num_layers: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    qkv_slot_num: usize,
    proj_slot_num: usize,
    ffn_slot_num: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_rotary_pct")]
    rotary_pct: f64,
    #[serde(default = "default_rotary_base")]
    rotary_emb_base: f64,
    #[serde(default = "default_norm")]
    norm: String,
    #[serde(default = "default_final_norm")]
    final_norm: String,
    #[serde(default)]
    no_weight_tying: bool,
    #[serde(default = "default_activation")]
    norm_activation_type: String,
    #[serde(default = "default_eps")]
    layernorm_epsilon: f64,
}

fn default_rotary_pct() -> f64 {
    0.25
}
fn default_rotary_base() -> f64 {
    10000.0
}
fn default_norm() -> String {
    "layernorm_nonparam".into()
}
fn default_final_norm() -> String {
    "layernorm".into()
}
fn default_activation() -> String {
    "l2_norm_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

/// A validated model shape. Everything derived (head dim, rotary dims) is computed here once.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub qkv_slots: usize,
    pub proj_slots: usize,
    pub ffn_slots: usize,
    pub max_positions: usize,
    pub rotary_pct: f64,
    pub rotary_base: f64,
    pub norm_activation: NormActivation,
    pub layernorm_eps: f64,
}

/// Sizes far beyond any released model; they keep a hostile config from requesting
/// impossible allocations before a single weight has been read.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_SLOTS: usize = 1 << 20;
const MAX_POSITIONS: usize = 1 << 20;

impl ModelConfig {
    /// Bytes of weights one decoded token reads: every parameter token of every layer (all are
    /// used densely) plus the head's `vocab` embedding rows.
    pub fn weight_bytes_per_token(&self, vocab: usize, dtype: Dtype, embedding: Dtype) -> usize {
        let d = self.hidden_size;
        let slots = [self.qkv_slots, self.qkv_slots, self.qkv_slots, self.proj_slots, self.ffn_slots];
        // Keys: n rows of d; values: d rows of n (as quantized values are stored; the same bytes
        // as n rows of d for floats).
        let block: usize = slots.iter().map(|&n| n * dtype.row_bytes(d) + d * dtype.row_bytes(n)).sum();
        self.num_layers * block + vocab * embedding.row_bytes(d)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        // serde would also accept a struct as an array of its fields in order.
        if bytes.trim_ascii_start().first() == Some(&b'[') {
            return Err(Error::Config("expected a JSON object of settings".into()));
        }
        let raw: AuthorsConfig = serde_json::from_slice(bytes)?;
        let cfg = ModelConfig {
            num_layers: raw.num_layers,
            hidden_size: raw.hidden_size,
            num_heads: raw.num_attention_heads,
            qkv_slots: raw.qkv_slot_num,
            proj_slots: raw.proj_slot_num,
            ffn_slots: raw.ffn_slot_num,
            max_positions: raw.max_position_embeddings,
            rotary_pct: raw.rotary_pct,
            rotary_base: raw.rotary_emb_base,
            norm_activation: NormActivation::parse(&raw.norm_activation_type)?,
            layernorm_eps: raw.layernorm_epsilon,
        };
        if raw.norm != "layernorm_nonparam" {
            return Err(Error::Config(format!(
                "unsupported norm {:?} (TokenFormer blocks use \"layernorm_nonparam\")",
                raw.norm
            )));
        }
        if raw.final_norm != "layernorm" {
            return Err(Error::Config(format!(
                "unsupported final_norm {:?} (TokenFormer uses \"layernorm\")",
                raw.final_norm
            )));
        }
        if raw.no_weight_tying {
            return Err(Error::Config(
                "no_weight_tying is true, but TokenFormer checkpoints have no separate output matrix".into(),
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes the authors' keys, so a converted folder loads like an original one.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "qkv_slot_num": self.qkv_slots,
            "proj_slot_num": self.proj_slots,
            "ffn_slot_num": self.ffn_slots,
            "max_position_embeddings": self.max_positions,
            "rotary_pct": self.rotary_pct,
            "rotary_emb_base": self.rotary_base,
            "norm": "layernorm_nonparam",
            "final_norm": "layernorm",
            "no_weight_tying": false,
            "norm_activation_type": self.norm_activation.as_str(),
            "layernorm_epsilon": self.layernorm_eps,
        });
        // A json! value of plain numbers and strings always serialises.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let in_range = |name: &str, v: usize, max: usize| -> Result<()> {
            if v == 0 || v > max {
                return Err(Error::Config(format!("{name} is {v}; it must be between 1 and {max}")));
            }
            Ok(())
        };
        in_range("num_layers", self.num_layers, MAX_LAYERS)?;
        in_range("hidden_size", self.hidden_size, MAX_DIM)?;
        in_range("num_attention_heads", self.num_heads, MAX_DIM)?;
        in_range("qkv_slot_num", self.qkv_slots, MAX_SLOTS)?;
        in_range("proj_slot_num", self.proj_slots, MAX_SLOTS)?;
        in_range("ffn_slot_num", self.ffn_slots, MAX_SLOTS)?;
        in_range("max_position_embeddings", self.max_positions, MAX_POSITIONS)?;
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!(
                "num_attention_heads ({}) does not divide hidden_size ({})",
                self.num_heads, self.hidden_size
            ));
        }
        if !(0.0..=1.0).contains(&self.rotary_pct) {
            return bad(format!("rotary_pct is {}; it must be in [0, 1]", self.rotary_pct));
        }
        if !self.rotary_dims().is_multiple_of(2) {
            return bad(format!(
                "rotary dims int(head_dim {} * rotary_pct {}) = {} is odd; rotate-half needs an even number",
                self.head_dim(),
                self.rotary_pct,
                self.rotary_dims()
            ));
        }
        if !(self.rotary_base.is_finite() && self.rotary_base > 1.0) {
            return bad(format!("rotary_emb_base is {}; it must be a finite number above 1", self.rotary_base));
        }
        if !(self.layernorm_eps.is_finite() && self.layernorm_eps > 0.0) {
            return bad(format!("layernorm_epsilon is {}; it must be positive", self.layernorm_eps));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// `int(head_dim * rotary_pct)`, truncated as Python's `int()` does.
    pub fn rotary_dims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config in the authors' keys, with `overrides` (a JSON object) applied.
    fn config_with(overrides: &str) -> String {
        let mut cfg: serde_json::Value = serde_json::json!({
            "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "qkv_slot_num": 8,
            "proj_slot_num": 8, "ffn_slot_num": 16, "max_position_embeddings": 32, "rotary_pct": 0.25,
            "norm": "layernorm_nonparam", "final_norm": "layernorm", "no_weight_tying": false,
            "norm_activation_type": "l2_norm_gelu", "torch_dtype": "float16"
        });
        let extra: serde_json::Map<String, serde_json::Value> = serde_json::from_str(overrides).unwrap();
        cfg.as_object_mut().unwrap().extend(extra);
        cfg.to_string()
    }

    #[test]
    fn reads_authors_keys_and_ignores_others() {
        let cfg = ModelConfig::from_json(config_with("{}").as_bytes()).unwrap();
        assert_eq!(cfg.head_dim(), 16);
        assert_eq!(cfg.rotary_dims(), 4);
        assert_eq!(cfg.norm_activation, NormActivation::L2NormGelu);
        let again = ModelConfig::from_json(cfg.to_json().as_bytes()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn rejects_impossible_values_with_specific_errors() {
        let cases = [
            (r#"{"num_attention_heads": 5}"#, "does not divide"),
            (r#"{"rotary_pct": 0.1875}"#, "is odd"),
            (r#"{"rotary_pct": 1.5}"#, "rotary_pct"),
            (r#"{"norm_activation_type": "relu"}"#, "unknown norm_activation_type"),
            (r#"{"norm": "rmsnorm"}"#, "unsupported norm"),
            (r#"{"final_norm": "rmsnorm"}"#, "unsupported final_norm"),
            (r#"{"no_weight_tying": true}"#, "no_weight_tying"),
            (r#"{"num_layers": 0}"#, "num_layers is 0"),
            (r#"{"hidden_size": 100000000}"#, "hidden_size"),
            (r#"{"max_position_embeddings": 0}"#, "max_position_embeddings"),
            (r#"{"rotary_emb_base": -1}"#, "rotary_emb_base"),
        ];
        for (extra, needle) in cases {
            let err = ModelConfig::from_json(config_with(extra).as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{extra}: got {err}");
        }
    }

    #[test]
    fn rejects_non_json_and_missing_keys() {
        assert!(matches!(ModelConfig::from_json(b"not json"), Err(Error::ConfigJson(_))));
        let err = ModelConfig::from_json(br#"{"num_layers": 2}"#).unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
        assert!(ModelConfig::from_json(br#"{"num_layers": -2}"#).is_err());
    }
}
