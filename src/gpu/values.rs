//! The second half of a fused Pattention for one decoded token: Theta · V, where Theta is made from
//! the scores and the statistics [`super::scores`] left while the values kernel loads them, and the
//! slots are split across workgroups so that even a 768-row product launches enough of them
//! (`shaders/values.wgsl`). Splits write partial rows that the next kernel adds.

use super::context::{Access, Encoder, GpuContext};
use super::params::shader_params;
use super::scores::{rows_per_workgroup, DecodeKernel, DecodeShape};
use super::weights::{padded, Matrix};
use crate::config::NormActivation;

shader_params!(ValuesParams for "values.wgsl" {
    n: u32, k_octets: u32, d_out: u32, rows: u32, split_octets: u32, stat_blocks: u32, norm: u32, residual_parts: u32,
    stride: u32,
});

/// Most splits of the slots, hence most partial rows a consumer adds.
pub(crate) const MAX_SPLITS: usize = 8;
/// Slots one split holds in workgroup memory (4 × 512).
const SPLIT_SLOTS: usize = 2048;
/// Fewest output rows per workgroup: every workgroup computes Theta for its slots, so splitting
/// the slots, rather than taking fewer rows, makes up the workgroup count.
const MIN_ROWS: usize = 32;

pub(crate) struct Values {
    kernel: DecodeKernel,
    shape: DecodeShape,
}

/// A transposed value matrix (one chunk) bound to its scores, output, statistics and residual.
pub(crate) struct ValuesBinding {
    bind: wgpu::BindGroup,
    slots: usize,
    /// Octets of a stored row.
    k_octets: usize,
    d_out: usize,
    groups: usize,
    weight_bytes: u64,
    split: Split,
    /// See [`DecodeKernel::prepare`].
    whole_row_groups: bool,
}

/// How one product is split: workgroups of `rows` output rows, the slots in `splits` parts of
/// `split_octets` octets (whole blocks of the dtype's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    pub rows: usize,
    pub splits: usize,
    pub split_octets: usize,
}

impl Split {
    /// The split of `groups` products of `d_out` rows over `slots` slots (rows of `octets`
    /// octets): as few splits as reach the shape's `min_workgroups`, at most [`MAX_SPLITS`], each
    /// within workgroup memory.
    pub fn of(d_out: usize, slots: usize, octets: usize, groups: usize, shape: &DecodeShape) -> Split {
        let rows = rows_per_workgroup(d_out, groups, shape).max(MIN_ROWS);
        let blocks = groups * d_out.div_ceil(rows);
        let wanted = shape.min_workgroups.div_ceil(blocks).clamp(1, MAX_SPLITS);
        let block = shape.dtype.block_octets();
        let split_octets = octets.div_ceil(wanted.max(slots.div_ceil(SPLIT_SLOTS))).next_multiple_of(block).max(block);
        Split { rows, splits: octets.div_ceil(split_octets), split_octets }
    }
}

/// Whether a product over `slots` slots fits the splits.
pub(crate) fn fits(slots: usize) -> bool {
    slots <= MAX_SPLITS * SPLIT_SLOTS
}

impl Values {
    pub fn new(ctx: &GpuContext, shape: DecodeShape) -> Values {
        use Access::{Read, ReadWrite};
        let body = include_str!("../../shaders/values.wgsl");
        let kernel = DecodeKernel::new(ctx, "values", shape, body, &[Read, Read, ReadWrite, Read, Read]);
        Values { kernel, shape }
    }

    /// Binds `w` (Vᵀ: rows are output dims, one chunk) with the scores it reads, the partial rows
    /// it writes, the scores' statistics and the residual stream it adds (if any).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        w: &Matrix,
        scores: &wgpu::Buffer,
        out: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        residual: &wgpu::Buffer,
    ) -> ValuesBinding {
        let values = &w.chunks[0].buffer;
        let bind = self.kernel.bind(ctx, &[scores, values, out, stats, residual]);
        let (slots, k_octets, d_out, groups) = (w.cols, w.row_octets(), w.rows / w.groups, w.groups);
        let split = Split::of(d_out, slots, k_octets, groups, &self.shape);
        let whole_row_groups = self.kernel.prepare(ctx, d_out, groups);
        ValuesBinding { bind, slots, k_octets, d_out, groups, weight_bytes: values.size(), split, whole_row_groups }
    }

    /// Records the product, counted as `kind`: the statistics are `stat_blocks` per group; split 0
    /// adds `residual_parts` partial rows of the residual stream. Returns the splits written.
    pub fn encode(
        &self,
        enc: &mut Encoder,
        kind: &'static str,
        b: &ValuesBinding,
        norm: NormActivation,
        stat_blocks: usize,
        residual_parts: usize,
    ) -> usize {
        let split = b.split;
        let norm = match norm {
            NormActivation::L2NormGelu => 0,
            NormActivation::GeluL2Norm => 1,
            NormActivation::Softmax => 2,
        };
        let params = ValuesParams {
            n: b.slots as u32,
            k_octets: b.k_octets as u32,
            d_out: b.d_out as u32,
            rows: split.rows as u32,
            split_octets: split.split_octets as u32,
            stat_blocks: stat_blocks as u32,
            norm,
            residual_parts: residual_parts as u32,
            stride: padded(b.d_out) as u32,
        };
        let grid = [b.d_out.div_ceil(split.rows) as u32, split.splits as u32, b.groups as u32];
        enc.dispatch_product(kind, b.weight_bytes, self.kernel.get(b.whole_row_groups), &b.bind, &params, grid);
        split.splits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{layer_norm, normalize_scores};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::scores::{Scores, ScoresInput};
    use crate::gpu::testing::stored;
    use crate::gpu::testing::{decode_shapes, random, read_f32, test_context};
    use crate::gpu::weights::{row_octets, Store};
    use crate::Dtype;

    /// A whole Pattention with the residual add, fused (scores then values) on the device, against
    /// the CPU's layer norm, scores, normalisation and product; the residual stream arrives as
    /// several partial rows and leaves as the value kernel's splits.
    #[test]
    fn fused_pattention_matches_the_cpu() {
        let ctx = test_context();
        let mut pages = ParamPages::default();
        let shapes: Vec<DecodeShape> = Dtype::ALL.into_iter().flat_map(|dtype| decode_shapes(&ctx, dtype)).collect();
        let cases = [NormActivation::L2NormGelu, NormActivation::GeluL2Norm, NormActivation::Softmax]
            .into_iter()
            .flat_map(|f| shapes.iter().map(move |&shape| (f, shape)));
        for (f, shape) in cases {
            // Hidden sizes and slots not a multiple of 4 (130 and 35 end an octet in its first quad);
            // slots from a few to several splits' worth.
            for (d, n, parts) in [(40usize, 61usize, 1usize), (72, 35, 3), (130, 3072 + 5, 2), (768, 768, 4)] {
                let dq = padded(d);
                let partial_rows: Vec<f32> = random(parts * dq, 61).iter().map(|v| v * 4.0).collect();
                let mut x = vec![0f32; d];
                for p in 0..parts {
                    x.iter_mut().zip(&partial_rows[p * dq..]).for_each(|(x, v)| *x += v);
                }
                let keys = random(n * d, 62);
                let values_t = random(d * n, 63);
                let store = Store { dtype: shape.dtype, max_chunk_bytes: 1 << 30 };
                let k = Matrix::create(&ctx, "keys", n, d, 1, store).unwrap();
                k.write_rows(&ctx, 0, &keys).unwrap();
                let v = Matrix::create(&ctx, "values", d, n, 1, store).unwrap();
                v.write_rows(&ctx, 0, &values_t).unwrap();
                // Partial rows past `parts` hold garbage the kernels must not read.
                let mut resid = partial_rows.clone();
                resid.extend(vec![1e6; dq]);
                let resid = ctx.storage_init("residual", &f32_bytes(&resid));
                let scores = ctx.storage("scores", n as u64 * 4);
                let stats = ctx.storage("stats", 4096);
                let out = ctx.storage("out", (MAX_SPLITS * dq * 4) as u64);
                let unused = ctx.storage("unused", 16);
                let sk = Scores::new(&ctx, shape, 1e-5);
                let vk = Values::new(&ctx, shape);
                let sb = sk.bind(&ctx, &k, 1, &resid, &scores, &stats, [&unused, &unused]);
                let vb = vk.bind(&ctx, &v, &scores, &out, &stats, &resid);
                let mut enc = Encoder::new(&ctx, &mut pages);
                sk.encode(&mut enc, "scores", &sb, ScoresInput::Residual { parts }, Some(f));
                let splits = vk.encode(&mut enc, "values", &vb, f, sk.blocks(&sb), parts);
                enc.submit();
                let got_rows = read_f32(&ctx, &out, splits * dq);
                let mut got = vec![0f32; d];
                for s in 0..splits {
                    got.iter_mut().zip(&got_rows[s * dq..]).for_each(|(g, v)| *g += v);
                }
                let (keys, values_t) = (stored(shape.dtype, &keys, d), stored(shape.dtype, &values_t, n));
                let mut a = x.clone();
                layer_norm(&mut a, 1e-5);
                let mut theta: Vec<f32> =
                    keys.chunks_exact(d).map(|row| row.iter().zip(&a).map(|(w, a)| w * a).sum()).collect();
                normalize_scores(&mut theta, f);
                // Softmax Theta reaches n times a probability: an output can be a small difference
                // of large terms, so the bound is relative to the terms' magnitudes. q4 sums each
                // group's d · Σ q θ and m · Σ θ apart (m, a group's minimum, is its smallest value):
                // those are terms too.
                for c in 0..d {
                    let row = &values_t[c * n..][..n];
                    let terms = row.iter().zip(&theta).map(|(w, t)| (w * t) as f64);
                    let want = x[c] as f64 + terms.clone().sum::<f64>();
                    let offsets: f64 = match shape.dtype {
                        Dtype::Q4 => row
                            .chunks(32)
                            .zip(theta.chunks(32))
                            .map(|(w, t)| {
                                w.iter().fold(f32::MAX, |m, &v| m.min(v)).abs() as f64
                                    * t.iter().map(|t| t.abs() as f64).sum::<f64>()
                            })
                            .sum(),
                        _ => 0.0,
                    };
                    let scale = x[c].abs() as f64 + terms.map(f64::abs).sum::<f64>() + offsets;
                    let err = (got[c] as f64 - want).abs();
                    assert!(
                        err <= 2e-6 * scale.max(1.0),
                        "{f:?} {shape:?} d {d} n {n} parts {parts}: [{c}] {} vs {want}",
                        got[c]
                    );
                }
            }
        }
    }

    #[test]
    fn splits_reach_the_workgroup_target_and_fit_workgroup_memory() {
        // The 150M and 1.5B shapes: (d, slots, groups).
        let ctx = test_context();
        let shapes: Vec<DecodeShape> = Dtype::ALL.into_iter().flat_map(|dtype| decode_shapes(&ctx, dtype)).collect();
        let cases = [(768, 768, 3), (768, 768, 1), (768, 3072, 1), (1536, 6144, 1), (1536, 1536, 3)];
        for ((d, slots, groups), shape) in cases.into_iter().flat_map(|c| shapes.iter().map(move |s| (c, s))) {
            let octets = row_octets(slots, shape.dtype);
            let s = Split::of(d, slots, octets, groups, shape);
            let workgroups = groups * d.div_ceil(s.rows) * s.splits;
            assert!(workgroups >= shape.min_workgroups, "{d} {slots} {shape:?}: {s:?}");
            assert!(s.rows >= MIN_ROWS && s.rows <= shape.max_rows.max(MIN_ROWS));
            assert!(s.split_octets * 8 <= SPLIT_SLOTS && s.splits <= MAX_SPLITS, "{s:?}");
            assert_eq!(s.split_octets % shape.dtype.block_octets(), 0, "{shape:?}: splits of whole blocks");
            assert!(s.split_octets * s.splits >= octets && s.split_octets * (s.splits - 1) < octets);
        }
    }
}
