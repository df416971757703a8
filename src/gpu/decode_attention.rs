//! Attention of one decoded token, split along the context (flash-decoding), with RoPE and the
//! KV-cache append folded in (`shaders/decode_attention_lanes.wgsl` on GPUs,
//! `shaders/decode_attention.wgsl` on CPU adapters, both after `shaders/lib/decode_attention.wgsl`);
//! the proj scores kernel combines the splits as it loads its input.

use super::attention::{attend_source, CPU_THREADS};
use super::context::{Access, Encoder, GpuContext, Kernel};
use super::kv_cache::KvDtype;
use super::params::shader_params;
use super::weights::padded;

shader_params!(DecodeAttentionParams for "lib/decode_attention.wgsl" {
    pos: u32, d: u32, hd: u32, half: u32, splits: u32, chunk: u32, qkv_parts: u32, stride: u32, scale: f32,
});

/// Most splits per head: the combining kernel reads heads × splits × (head dim + 2) values.
pub(crate) const MAX_SPLITS: usize = 8;
/// Threads per position in the GPU kernel, each summing every 16th dim of the head.
const LANES: usize = 16;
/// Fewest positions a split covers: one pass of the GPU kernel's 16 position slots.
const MIN_CHUNK: usize = 16;

pub(crate) struct DecodeAttention {
    kernel: Kernel,
}

/// Most heads × splits: the combining kernel weighs every (head, split) in workgroup memory
/// (`SPLIT_WEIGHTS` in `shaders/scores.wgsl`).
pub(crate) const SPLIT_WEIGHTS: usize = 256;

/// Positions per split and splits for a context of `visible` positions over `heads` heads: every
/// split non-empty.
pub(crate) fn split(visible: usize, heads: usize) -> (usize, usize) {
    let most = MAX_SPLITS.min(SPLIT_WEIGHTS / heads).max(1);
    let chunk = visible.div_ceil(most).max(MIN_CHUNK);
    (chunk, visible.div_ceil(chunk))
}

/// Floats of the partial results: (max, sum) and head_dim running sums per head and split.
pub(crate) fn partial_floats(d: usize, heads: usize) -> usize {
    heads * MAX_SPLITS * (2 + d / heads)
}

impl DecodeAttention {
    /// The kernel for heads of `head_dim` (at most 256), shaped for a GPU (`lanes`: each of a
    /// position's 16 lanes covers head_dim / 16 dims, a constant of the shader so its loops unroll
    /// into registers) or for a CPU adapter (`shaders/lib/attend.wgsl`'s tile loop, as prefill,
    /// reading the caches in quads: heads of whole quads only, as every released checkpoint's are;
    /// other heads get the GPU kernel, exact there too).
    /// The caches hold `kv`.
    pub fn new(ctx: &GpuContext, head_dim: usize, lanes: bool, kv: KvDtype) -> DecodeAttention {
        use Access::{Read, ReadWrite};
        let lib = format!("{}\n{}", kv.prelude(), include_str!("../../shaders/lib/decode_attention.wgsl"));
        let source = if lanes || !head_dim.is_multiple_of(4) {
            let dims = head_dim.div_ceil(LANES).max(1);
            format!(
                "const DIMS_PER_LANE: u32 = {dims}u;\n{lib}\n{}",
                include_str!("../../shaders/decode_attention_lanes.wgsl")
            )
        } else {
            let attend = attend_source(CPU_THREADS, 4 * (head_dim / 4).div_ceil(CPU_THREADS));
            format!("{attend}\n{lib}\n{}", include_str!("../../shaders/decode_attention.wgsl"))
        };
        DecodeAttention {
            kernel: Kernel::new(ctx, "attention", &source, &[Read, Read, ReadWrite, ReadWrite, ReadWrite]),
        }
    }

    /// Binds the q|k|v partial rows, the RoPE table, the caches and the partial results.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        qkv: &wgpu::Buffer,
        table: &wgpu::Buffer,
        caches: [&wgpu::Buffer; 2],
        out: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[qkv, table, caches[0], caches[1], out])
    }

    /// Records attention of the token at `pos` over positions 0..=pos; q, k and v are the sum of
    /// `qkv_parts` partial rows. Returns the splits per head.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        enc: &mut Encoder,
        bind: &wgpu::BindGroup,
        pos: usize,
        d: usize,
        heads: usize,
        half: usize,
        qkv_parts: usize,
    ) -> usize {
        let hd = d / heads;
        let (chunk, splits) = split(pos + 1, heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let [pos, d, hd, half, splits, chunk, qkv_parts, stride] =
            [pos, d, hd, half, splits, chunk, qkv_parts, padded(d)].map(|v| v as u32);
        let params = DecodeAttentionParams { pos, d, hd, half, splits, chunk, qkv_parts, stride, scale };
        enc.dispatch(&self.kernel, bind, &params, [heads as u32, splits, 1]);
        splits as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{apply_rope, axpy, dot, rope_inv_freq, softmax_scaled};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::rope::rope_table;
    use crate::gpu::testing::{assert_close, random, read_bytes, read_f32, test_context};

    #[test]
    fn matches_the_cpu_with_rope_and_the_cache_append() {
        let ctx = test_context();
        let mut pages = ParamPages::default();
        // One split and several (past MIN_CHUNK × MAX_SPLITS the chunks grow, and passes end within
        // a chunk); head dims not a multiple of the 16 lanes, the 1.5B model's 96, and the most, 256.
        // Both kernels: a GPU's and a CPU adapter's (which reads quads; 18 is not whole quads and
        // takes the GPU kernel there).
        let cases = [
            (3usize, 18usize, 0usize, 1usize),
            (2, 20, 70, 3),
            (4, 24, 200, 2),
            (2, 200, 1100, 1),
            (3, 96, 333, 2),
            (1, 256, 40, 1),
        ];
        // Both caches: f32, and f16 (the earlier positions f16-rounded; the new one's k and v come
        // from workgroup memory unrounded, and are stored rounded).
        let shapes = [true, false].into_iter().flat_map(|l| [KvDtype::F32, KvDtype::F16].map(|kv| (l, kv)));
        for ((lanes, kv), (heads, hd, pos, parts)) in shapes.flat_map(|s| cases.map(|c| (s, c))) {
            let attention = DecodeAttention::new(&ctx, hd, lanes, kv);
            let d = heads * hd;
            let stride = padded(d);
            let max_pos = pos + 3;
            let inv_freq = rope_inv_freq((hd as f64 * 0.25) as usize, 10000.0);
            let table = ctx.storage_init("rope", &f32_bytes(&rope_table(max_pos, &inv_freq)));
            let rows = random(parts * 3 * stride, 71);
            let sum = |which: usize| -> Vec<f32> {
                (0..d).map(|c| (0..parts).map(|s| rows[(s * 3 + which) * stride + c]).sum()).collect()
            };
            let kc: Vec<f32> = random(max_pos * d, 72).iter().map(|v| v * 4.0).collect();
            let vc = random(max_pos * d, 73);
            let (qkv, k_buf, v_buf) = (
                ctx.storage_init("qkv", &f32_bytes(&rows)),
                ctx.storage_init("k", &kv.encode(&kc)),
                ctx.storage_init("v", &kv.encode(&vc)),
            );
            let stored = |v: &[f32]| kv.decode(&kv.encode(v));
            let (kc, vc) = (stored(&kc), stored(&vc));
            let out = ctx.storage("out", (partial_floats(d, heads) * 4) as u64);
            let bind = attention.bind(&ctx, &qkv, &table, [&k_buf, &v_buf], &out);
            let mut enc = Encoder::new(&ctx, &mut pages);
            let splits = attention.encode(&mut enc, &bind, pos, d, heads, inv_freq.len(), parts);
            enc.submit();
            let partial = read_f32(&ctx, &out, partial_floats(d, heads));
            let (mut q, mut k, v) = (sum(0), sum(1), sum(2));
            for h in 0..heads {
                apply_rope(&mut q[h * hd..(h + 1) * hd], pos, &inv_freq);
                apply_rope(&mut k[h * hd..(h + 1) * hd], pos, &inv_freq);
            }
            let cache = |b: &wgpu::Buffer| kv.decode(&read_bytes(&ctx, b, max_pos * d * kv.bytes()));
            let (got_k, got_v) = (cache(&k_buf), cache(&v_buf));
            assert_close(&got_k[pos * d..(pos + 1) * d], &stored(&k), 1e-6, "appended k");
            assert_close(&got_v[pos * d..(pos + 1) * d], &stored(&v), 1e-6, "appended v");
            assert_eq!(&got_k[..pos * d], &kc[..pos * d], "earlier keys untouched");
            let (mut kc, mut vc) = (kc, vc);
            kc[pos * d..(pos + 1) * d].copy_from_slice(&k);
            vc[pos * d..(pos + 1) * d].copy_from_slice(&v);
            let scale = 1.0 / (hd as f32).sqrt();
            let acc_base = heads * splits * 2;
            for h in 0..heads {
                let qh = &q[h * hd..][..hd];
                let mut probs: Vec<f32> = (0..=pos).map(|j| dot(qh, &kc[j * d + h * hd..][..hd]) * scale).collect();
                softmax_scaled(&mut probs, 1.0);
                let mut want = vec![0f32; hd];
                for (j, &p) in probs.iter().enumerate() {
                    axpy(&mut want, p, &vc[j * d + h * hd..][..hd]);
                }
                // The combination the next kernel makes (scores.wgsl, mode 2).
                let at = |s: usize| h * splits + s;
                let m = (0..splits).map(|s| partial[at(s) * 2]).fold(f32::MIN, f32::max);
                let w: Vec<f32> = (0..splits).map(|s| (partial[at(s) * 2] - m).exp()).collect();
                let l: f32 = (0..splits).map(|s| partial[at(s) * 2 + 1] * w[s]).sum();
                let got: Vec<f32> = (0..hd)
                    .map(|c| (0..splits).map(|s| partial[acc_base + at(s) * hd + c] * w[s]).sum::<f32>() / l)
                    .collect();
                assert_close(
                    &got,
                    &want,
                    2e-5,
                    &format!("lanes {lanes} {kv:?} heads {heads} hd {hd} pos {pos} splits {splits} head {h}"),
                );
            }
        }
    }
}
