//! Inspection on the device: while an ordinary forward pass runs, Theta maps are copied out of the
//! scores buffer right after their normalisation (full maps), or reduced there to per-token top-k
//! and column sums (summaries), and the attention probabilities are recomputed from q and the key
//! cache. Only these results are read back; the kernels exist only once something is inspected.

use super::context::{groups_for, Access, Encoder, GpuContext, Kernel};
use crate::model::Projection;

pub(crate) struct Inspector {
    top_k: Kernel,
    sums: Kernel,
    probs: Kernel,
}

/// What one inspected forward pass keeps of one Theta map.
pub(crate) enum MapSink {
    /// The whole map [tokens × slots], copied row by row.
    Full(wgpu::Buffer),
    /// Top-k pairs [tokens × k × (slot, value bits)] and column sums [slots], with their bind groups.
    Summary { top: wgpu::Buffer, top_bind: wgpu::BindGroup, sums: wgpu::Buffer, sums_bind: wgpu::BindGroup },
}

pub(crate) struct MapCapture {
    pub layer: usize,
    pub proj: Projection,
    pub slots: usize,
    pub sink: MapSink,
}

pub(crate) struct AttentionSink {
    pub layer: usize,
    pub probs: wgpu::Buffer,
    pub bind: wgpu::BindGroup,
}

/// Everything one inspected pass records, sized for a prompt of `tokens` from position 0.
pub(crate) struct CapturePlan<'a> {
    pub inspector: &'a Inspector,
    pub tokens: usize,
    pub k: usize,
    pub maps: Vec<MapCapture>,
    pub attention: Vec<AttentionSink>,
}

/// Where a projection's Theta rows sit in the scores buffer after its normalisation: q, k and v
/// share each token's row of `3 · qkv_slots`.
pub(crate) struct ThetaLayout {
    pub n: usize,
    pub lda: usize,
    pub offset: usize,
}

impl Inspector {
    pub fn new(ctx: &GpuContext) -> Inspector {
        let top_k = Kernel::new(
            ctx,
            "theta top-k",
            include_str!("../../shaders/theta_top_k.wgsl"),
            &[Access::Read, Access::ReadWrite],
        );
        let sums = top_k.sibling(ctx, "theta column sums", include_str!("../../shaders/theta_sums.wgsl"));
        let probs = Kernel::new(
            ctx,
            "attention probabilities",
            include_str!("../../shaders/attention_probs.wgsl"),
            &[Access::Read, Access::Read, Access::ReadWrite],
        );
        Inspector { top_k, sums, probs }
    }

    /// A summary sink over `scores` for `tokens` rows of `slots` keeping the top `k` of each row.
    pub fn summary_sink(
        &self,
        ctx: &GpuContext,
        scores: &wgpu::Buffer,
        tokens: usize,
        slots: usize,
        k: usize,
    ) -> MapSink {
        let top = ctx.storage("theta top-k", (tokens * k * 8) as u64);
        let sums = ctx.storage("theta column sums", (slots * 4) as u64);
        MapSink::Summary {
            top_bind: self.top_k.bind(ctx, &[scores, &top]),
            sums_bind: self.sums.bind(ctx, &[scores, &sums]),
            top,
            sums,
        }
    }

    pub fn attention_sink(
        &self,
        ctx: &GpuContext,
        layer: usize,
        q: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        heads: usize,
        tokens: usize,
    ) -> AttentionSink {
        let probs = ctx.storage("attention probabilities", (heads * tokens * tokens * 4) as u64);
        AttentionSink { layer, bind: self.probs.bind(ctx, &[q, k_cache, &probs]), probs }
    }
}

impl CapturePlan<'_> {
    /// Records what is wanted of `proj` in block `layer`, whose Theta for the `t` rows at positions
    /// `start..` is now in `scores`.
    #[allow(clippy::too_many_arguments)]
    pub fn theta(
        &self,
        enc: &mut Encoder,
        scores: &wgpu::Buffer,
        layer: usize,
        proj: Projection,
        at: &ThetaLayout,
        t: usize,
        start: usize,
    ) {
        let Some(map) = self.maps.iter().find(|m| m.layer == layer && m.proj == proj) else { return };
        match &map.sink {
            MapSink::Full(out) => {
                let row_bytes = (at.n * 4) as u64;
                if at.lda == at.n && at.offset == 0 {
                    enc.copy_at(scores, 0, out, start as u64 * row_bytes, t as u64 * row_bytes);
                } else {
                    for r in 0..t {
                        let src = ((r * at.lda + at.offset) * 4) as u64;
                        enc.copy_at(scores, src, out, (start + r) as u64 * row_bytes, row_bytes);
                    }
                }
            }
            MapSink::Summary { top_bind, sums_bind, .. } => {
                let (n, lda, offset) = (at.n as u32, at.lda as u32, at.offset as u32);
                let k = self.k as u32;
                enc.dispatch(&self.inspector.top_k, top_bind, &[n, lda, offset, k, start as u32], [t as u32, 1, 1]);
                enc.dispatch(
                    &self.inspector.sums,
                    sums_bind,
                    &[t as u32, n, lda, offset],
                    [groups_for(at.n, 64), 1, 1],
                );
            }
        }
    }

    /// Records block `layer`'s attention probabilities for the `t` queries at positions `start..`
    /// (q holds them after RoPE; the key cache holds positions up to `start + t`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        enc: &mut Encoder,
        layer: usize,
        t: usize,
        start: usize,
        heads: usize,
        d: usize,
        hd: usize,
    ) {
        let Some(sink) = self.attention.iter().find(|a| a.layer == layer) else { return };
        let scale = 1.0 / (hd as f32).sqrt();
        let params = [start as u32, d as u32, hd as u32, scale.to_bits(), self.tokens as u32];
        enc.dispatch(&self.inspector.probs, &sink.bind, &params, [heads as u32, t as u32, 1]);
    }
}
