//! Interventions: scaling chosen parameter tokens' Theta columns to test what the inspector shows.
//!
//! In a Pattention layer, `out = Theta · V`: each value parameter token is written into the output in
//! proportion to its Theta column. An intervention multiplies one slot's column by a factor after the
//! normalisation (0 knocks the slot out, 2 doubles it, a negative factor reverses it), so its value
//! vector contributes `factor` times what it would have, for every token, in prefill, decode,
//! inspection and perplexity alike. Scaling Theta rather than the value rows keeps this independent of
//! how the weights are stored (f32, f16 or quantized) and exact.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::inspect::check_slot;
use crate::model::Projection;

/// Scale parameter token `slot` of `proj` in block `layer` by `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intervention {
    pub layer: usize,
    pub proj: Projection,
    pub slot: usize,
    pub factor: f32,
}

impl Intervention {
    /// Parses `L:proj:slot=factor`, e.g. `2:ffn:17=0` (knock out) or `0:query:3=2.5`.
    pub fn parse(spec: &str) -> Result<Intervention> {
        let bad = |why: &str| Error::Usage(format!("intervention {spec:?}: {why} (expected LAYER:PROJ:SLOT=FACTOR)"));
        let (target, factor) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
        let mut parts = target.split(':');
        let (Some(layer), Some(proj), Some(slot), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("the target is not LAYER:PROJ:SLOT"));
        };
        let number = |s: &str, what: &str| s.trim().parse::<usize>().map_err(|_| bad(&format!("{what} {s:?}")));
        let factor = factor.trim().parse::<f32>().map_err(|_| bad(&format!("factor {factor:?} is not a number")))?;
        Ok(Intervention {
            layer: number(layer, "layer")?,
            proj: Projection::parse(proj.trim())?,
            slot: number(slot, "slot")?,
            factor,
        })
    }

    fn key(&self) -> (usize, usize, usize) {
        (self.layer, self.proj as usize, self.slot)
    }
}

impl std::fmt::Display for Intervention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}={}", self.layer, self.proj.as_str(), self.slot, self.factor)
    }
}

/// A validated set of interventions, at most one per parameter token, ordered by layer, projection
/// (in [`Projection::ALL`] order) and slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interventions {
    list: Vec<Intervention>,
}

impl Interventions {
    /// The set for a model of `cfg`: every target must exist and every factor be finite. A slot named
    /// twice takes the last factor given.
    pub fn new(list: impl IntoIterator<Item = Intervention>, cfg: &ModelConfig) -> Result<Interventions> {
        let mut out: Vec<Intervention> = Vec::new();
        for i in list {
            check_slot(i.layer, i.proj, i.slot, cfg)?;
            if !i.factor.is_finite() {
                return Err(Error::Usage(format!("intervention {i}: the factor must be a finite number")));
            }
            out.retain(|o| o.key() != i.key());
            out.push(i);
        }
        out.sort_by_key(Intervention::key);
        Ok(Interventions { list: out })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Intervention> {
        self.list.iter()
    }

    /// The (slot, factor) pairs of `proj` in block `layer`, by slot.
    pub fn of(&self, layer: usize, proj: Projection) -> Vec<(usize, f32)> {
        self.list.iter().filter(|i| i.layer == layer && i.proj == proj).map(|i| (i.slot, i.factor)).collect()
    }
}

/// Multiplies column `slot` of every row of `theta` (rows of `n` values) by its factor.
pub fn scale_columns(theta: &mut [f32], n: usize, scales: &[(usize, f32)]) {
    for row in theta.chunks_exact_mut(n) {
        for &(slot, factor) in scales {
            row[slot] *= factor;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig::from_json(
            br#"{"num_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "qkv_slot_num": 5,
                 "proj_slot_num": 6, "ffn_slot_num": 7, "max_position_embeddings": 16}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_the_cli_form_and_names_what_is_wrong() {
        let i = Intervention::parse("1:ffn:6=-0.5").unwrap();
        assert_eq!(i, Intervention { layer: 1, proj: Projection::Ffn, slot: 6, factor: -0.5 });
        assert_eq!(i.to_string(), "1:ffn:6=-0.5");
        for (spec, says) in [
            ("1:ffn:6", "no '='"),
            ("1:ffn=0", "not LAYER:PROJ:SLOT"),
            ("x:ffn:1=0", "layer \"x\""),
            ("1:ffn:-1=0", "slot \"-1\""),
            ("1:ffn:1=half", "factor \"half\""),
            ("1:mlp:1=0", "unknown projection"),
        ] {
            let err = Intervention::parse(spec).unwrap_err().to_string();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }

    #[test]
    fn a_set_is_checked_against_the_model_sorted_and_last_wins() {
        let cfg = cfg();
        let p = |s: &str| Intervention::parse(s).unwrap();
        let set = Interventions::new([p("1:key:4=2"), p("0:ffn:6=0"), p("1:key:4=3"), p("0:query:0=1")], &cfg).unwrap();
        let got: Vec<String> = set.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["0:query:0=1", "0:ffn:6=0", "1:key:4=3"]);
        assert_eq!(set.of(1, Projection::Key), vec![(4, 3.0)]);
        assert!(set.of(1, Projection::Query).is_empty());
        let err = Interventions::new([p("0:ffn:7=0")], &cfg).unwrap_err();
        assert!(matches!(err, Error::SlotOutOfRange { slot: 7, slots: 7, .. }), "{err}");
        assert!(matches!(Interventions::new([p("2:ffn:0=0")], &cfg), Err(Error::LayerOutOfRange { .. })));
        let err = Interventions::new([p("0:ffn:0=inf")], &cfg).unwrap_err();
        assert!(err.to_string().contains("finite"), "{err}");
    }

    #[test]
    fn scaling_touches_only_the_named_columns() {
        let mut theta = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        scale_columns(&mut theta, 3, &[(0, 0.0), (2, -2.0)]);
        assert_eq!(theta, vec![0.0, 2.0, -6.0, 0.0, 5.0, -12.0]);
    }
}
