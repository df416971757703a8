//! Interventions on the device (see [`crate::intervene`]): the set lives in one small buffer of
//! (column, factor) pairs, and after each normalisation of a Pattention that has some, one dispatch
//! scales those Theta columns in the scores buffer (`shaders/intervene.wgsl`). The decode path forms
//! Theta inside its values kernel and never writes it out, so while a set is active tokens take the
//! general path; without one nothing here runs and the decode path is unchanged.

use super::context::{groups_for, u32_bytes, Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use crate::config::ModelConfig;
use crate::intervene::Interventions;
use crate::model::Projection;

shader_params!(InterveneParams for "intervene.wgsl" { rows: u32, lda: u32, first: u32, count: u32 });

/// The intervention stage of the general path: its kernel and the set it applies.
pub(crate) struct Intervene {
    kernel: Kernel,
    set: Interventions,
    active: Option<DeviceInterventions>,
}

/// The general path's three normalisations per block: q, k and v together, proj, ffn.
#[derive(Clone, Copy)]
pub(crate) enum Stage {
    Qkv,
    Proj,
    Ffn,
}

/// A non-empty set on the device: its pairs bound to the scores buffer, and each block's range of
/// pairs per [`Stage`].
struct DeviceInterventions {
    bind: wgpu::BindGroup,
    ranges: Vec<[(u32, u32); 3]>,
}

impl Intervene {
    pub fn new(ctx: &GpuContext) -> Intervene {
        let source = include_str!("../../shaders/intervene.wgsl");
        let kernel = Kernel::new(ctx, "intervene", source, &[Access::Read, Access::ReadWrite]);
        Intervene { kernel, set: Interventions::default(), active: None }
    }

    /// The set applied now.
    pub fn set(&self) -> &Interventions {
        &self.set
    }

    /// Whether a non-empty set is applied (tokens then take the general path).
    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// Applies `set` from now on, its pairs bound to `scores`. Within a row of the scores q, k and
    /// v's Theta sit side by side (`qkv_slots` each), so their columns are offset by group.
    pub fn apply(&mut self, ctx: &GpuContext, set: Interventions, cfg: &ModelConfig, scores: &wgpu::Buffer) {
        self.active = (!set.is_empty()).then(|| self.upload(ctx, &set, cfg, scores));
        self.set = set;
    }

    fn upload(
        &self,
        ctx: &GpuContext,
        set: &Interventions,
        cfg: &ModelConfig,
        scores: &wgpu::Buffer,
    ) -> DeviceInterventions {
        let mut pairs: Vec<u32> = Vec::new();
        let mut ranges = Vec::with_capacity(cfg.num_layers);
        for layer in 0..cfg.num_layers {
            let mut stages = [(0, 0); 3];
            for (stage, projections) in [
                (Stage::Qkv, &[Projection::Query, Projection::Key, Projection::Value][..]),
                (Stage::Proj, &[Projection::Proj]),
                (Stage::Ffn, &[Projection::Ffn]),
            ] {
                let first = (pairs.len() / 2) as u32;
                for (group, &proj) in projections.iter().enumerate() {
                    for (slot, factor) in set.of(layer, proj) {
                        pairs.extend([(group * proj.slots(cfg) + slot) as u32, factor.to_bits()]);
                    }
                }
                stages[stage as usize] = (first, (pairs.len() / 2) as u32 - first);
            }
            ranges.push(stages);
        }
        let buffer = ctx.storage_init("interventions", &u32_bytes(&pairs));
        DeviceInterventions { bind: self.kernel.bind(ctx, &[&buffer, scores]), ranges }
    }

    /// Scales the columns the set names in `stage` of block `layer`, over `rows` rows of `lda`
    /// values in the scores buffer; nothing when it names none.
    pub fn encode(&self, enc: &mut Encoder, layer: usize, stage: Stage, rows: usize, lda: usize) {
        let Some(set) = &self.active else { return };
        let (first, count) = set.ranges[layer][stage as usize];
        if count == 0 {
            return;
        }
        let params = InterveneParams { rows: rows as u32, lda: lda as u32, first, count };
        enc.dispatch(&self.kernel, &set.bind, &params, [groups_for(count as usize, 64), rows as u32, 1]);
    }
}
