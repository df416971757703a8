//! Rotary embedding of q and k, and the KV-cache append, in one dispatch over the fused qkv rows.

use super::context::{groups_for, Access, Encoder, GpuContext, Kernel};
use super::kv_cache::KvDtype;
use super::params::shader_params;

shader_params!(RopeParams for "rope.wgsl" { t: u32, start: u32, d: u32, hd: u32, half: u32 });

pub(crate) struct Rope {
    kernel: Kernel,
    kv: KvDtype,
}

/// (cos, sin) of `pos * inv_freq[j]` for every position and rotary pair, computed in f64 like the
/// CPU backend and rounded once to f32.
pub(crate) fn rope_table(max_positions: usize, inv_freq: &[f64]) -> Vec<f32> {
    let mut table = Vec::with_capacity(max_positions * inv_freq.len() * 2);
    for pos in 0..max_positions {
        for &f in inv_freq {
            let (sin, cos) = (pos as f64 * f).sin_cos();
            table.extend([cos as f32, sin as f32]);
        }
    }
    table
}

impl Rope {
    /// The kernel for caches of `kv` (see [`KvDtype`]).
    pub fn new(ctx: &GpuContext, kv: KvDtype) -> Rope {
        let access = [Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];
        let source = format!("{}\n{}", kv.prelude(), include_str!("../../shaders/rope.wgsl"));
        Rope { kernel: Kernel::new(ctx, "rope", &source, &access), kv }
    }

    pub fn bind(
        &self,
        ctx: &GpuContext,
        qkv: &wgpu::Buffer,
        table: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[qkv, table, q, k_cache, v_cache])
    }

    /// Rotates `t` tokens at positions `start..start + t`; `half` is the number of rotary pairs.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        enc: &mut Encoder,
        bind: &wgpu::BindGroup,
        t: usize,
        start: usize,
        d: usize,
        head_dim: usize,
        half: usize,
    ) {
        let groups = [groups_for(d.div_ceil(self.kv.elems()), 64), t as u32, 1];
        let [t, start, d, hd, half] = [t, start, d, head_dim, half].map(|v| v as u32);
        enc.dispatch(&self.kernel, bind, &RopeParams { t, start, d, hd, half }, groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{apply_rope, rope_inv_freq};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::testing::{assert_close, random, read_bytes, read_f32, test_context};

    #[test]
    fn rotates_q_and_k_and_fills_the_caches() {
        let ctx = test_context();
        // Head dim 18 (rotary 4 of it with pct 0.25), 3 heads; T = 1 and T > 1 at a late start. Both
        // caches: f32, and f16 (k and v the rounded values).
        let (heads, hd, max_pos) = (3, 18, 40);
        let d = heads * hd;
        let inv_freq = rope_inv_freq((hd as f64 * 0.25) as usize, 10000.0);
        let table = ctx.storage_init("rope", &f32_bytes(&rope_table(max_pos, &inv_freq)));
        for (kv, (t, start)) in
            [KvDtype::F32, KvDtype::F16].into_iter().flat_map(|kv| [(1, 0), (5, 31), (1, 39)].map(|c| (kv, c)))
        {
            let rope = Rope::new(&ctx, kv);
            let qkv = random(t * 3 * d, 41 + t as u32);
            let qkv_buf = ctx.storage_init("qkv", &f32_bytes(&qkv));
            let q = ctx.storage("q", (t * d * 4) as u64);
            let cache_bytes = (max_pos * d * kv.bytes()) as u64;
            let (kc, vc) = (ctx.storage("k", cache_bytes), ctx.storage("v", cache_bytes));
            let bind = rope.bind(&ctx, &qkv_buf, &table, &q, &kc, &vc);
            let mut params = ParamPages::default();
            let mut enc = Encoder::new(&ctx, &mut params);
            rope.encode(&mut enc, &bind, t, start, d, hd, inv_freq.len());
            enc.submit();
            let cache = |b: &wgpu::Buffer| kv.decode(&read_bytes(&ctx, b, cache_bytes as usize));
            let (got_q, got_k, got_v) = (read_f32(&ctx, &q, t * d), cache(&kc), cache(&vc));
            let stored = |v: &[f32]| kv.decode(&kv.encode(v));
            for i in 0..t {
                let row = &qkv[i * 3 * d..(i + 1) * 3 * d];
                let (mut wq, mut wk) = (row[..d].to_vec(), row[d..2 * d].to_vec());
                for h in 0..heads {
                    apply_rope(&mut wq[h * hd..(h + 1) * hd], start + i, &inv_freq);
                    apply_rope(&mut wk[h * hd..(h + 1) * hd], start + i, &inv_freq);
                }
                let pos = start + i;
                assert_close(&got_q[i * d..(i + 1) * d], &wq, 1e-6, "q");
                let tolerance = if kv == KvDtype::F16 { 1e-3 } else { 1e-6 };
                assert_close(&got_k[pos * d..(pos + 1) * d], &wk, tolerance, &format!("{kv:?} k cache"));
                assert_eq!(&got_v[pos * d..(pos + 1) * d], &stored(&row[2 * d..])[..], "{kv:?} v cache");
            }
        }
    }
}
