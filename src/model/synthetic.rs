//! Random models of the released shapes, for benchmarks and measurements without a download.

use super::*;

/// Shapes of the authors' released models (TOKENFORMER.md), for benchmarks without a download.
pub const OFFICIAL_SIZES: [(&str, usize, usize, usize, usize, usize); 4] = [
    // name, layers, hidden, heads, qkv/proj slots, ffn slots
    ("150m", 12, 768, 12, 768, 3072),
    ("450m", 24, 1024, 16, 1024, 4096),
    ("900m", 32, 1280, 16, 1280, 5120),
    ("1.5b", 40, 1536, 16, 1536, 6144),
];

impl Model {
    /// A random model of an official size (GPT-NeoX vocabulary, 50,304 embedding rows), seeded.
    pub fn synthetic(size: &str, seed: u32) -> Result<Model> {
        let &(_, layers, d, heads, slots, ffn) = OFFICIAL_SIZES.iter().find(|s| s.0 == size).ok_or_else(|| {
            let names: Vec<&str> = OFFICIAL_SIZES.iter().map(|s| s.0).collect();
            Error::Usage(format!("unknown size {size:?} (one of {})", names.join(", ")))
        })?;
        let config = ModelConfig::from_json(
            serde_json::json!({
                "num_layers": layers, "hidden_size": d, "num_attention_heads": heads, "qkv_slot_num": slots,
                "proj_slot_num": slots, "ffn_slot_num": ffn, "max_position_embeddings": 2048,
                "rotary_pct": 0.25, "norm_activation_type": "l2_norm_gelu"
            })
            .to_string()
            .as_bytes(),
        )?;
        let mut counter = seed.wrapping_mul(0x9E37_79B9);
        let mut random = |len: usize, scale: f32| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    counter = counter.wrapping_add(1);
                    (crate::sampling::pcg_hash(counter) as f32 / u32::MAX as f32 - 0.5) * scale
                })
                .collect()
        };
        let key_scale = 2.0 / (d as f32).sqrt();
        let mut pattention = |n: usize| Pattention {
            n,
            key_param_tokens: WeightData::F32(random(n * d, key_scale)),
            value_param_tokens: WeightData::F32(random(n * d, 2.0 / (n as f32).sqrt())),
        };
        let blocks = (0..layers)
            .map(|_| Block {
                query: pattention(slots),
                key: pattention(slots),
                value: pattention(slots),
                proj: pattention(slots),
                ffn: pattention(ffn),
            })
            .collect();
        let embedding_rows = 50_304;
        Ok(Model {
            config,
            vocab_size: 50_277,
            embedding: WeightData::F32(random(embedding_rows * d, 0.2)),
            embedding_rows,
            blocks,
            final_norm_weight: vec![1.0; d],
            final_norm_bias: vec![0.0; d],
        })
    }
}
