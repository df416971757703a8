//! Causal multi-head attention of the new tokens over the KV cache.

use super::context::{Access, Encoder, GpuContext, Kernel};
use super::kv_cache::KvDtype;
use super::params::shader_params;

shader_params!(AttentionParams for "attention.wgsl" { start: u32, d: u32, hd: u32, scale: f32 });

/// The shader keeps one head's query in workgroup memory.
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Threads of an attention workgroup on a GPU, and on a CPU adapter: one SIMD group of lavapipe's,
/// so its barriers switch nothing.
const GPU_THREADS: usize = 64;
pub(crate) const CPU_THREADS: usize = 8;

/// `shaders/lib/attend.wgsl`, the tile loop both attention kernels share, with the constants it
/// needs: `threads` per workgroup, each adding `dims` of a head's.
pub(crate) fn attend_source(threads: usize, dims: usize) -> String {
    format!(
        "const WG: u32 = {threads}u;\nconst DIMS_PER_THREAD: u32 = {dims}u;\n{}",
        include_str!("../../shaders/lib/attend.wgsl")
    )
}

pub(crate) struct Attention {
    kernel: Kernel,
}

impl Attention {
    /// The kernel for heads of `head_dim` over caches of `kv`, shaped for a GPU (64 threads) or a
    /// CPU adapter (8).
    pub fn new(ctx: &GpuContext, head_dim: usize, gpu_shapes: bool, kv: KvDtype) -> Attention {
        let threads = if gpu_shapes { GPU_THREADS } else { CPU_THREADS };
        let source = format!(
            "{}\n{}\n{}",
            kv.prelude(),
            attend_source(threads, head_dim.div_ceil(threads).max(1)),
            include_str!("../../shaders/attention.wgsl")
        );
        let access = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        Attention { kernel: Kernel::new(ctx, "attention", &source, &access) }
    }

    pub fn bind(
        &self,
        ctx: &GpuContext,
        q: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
        o: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[q, k_cache, v_cache, o])
    }

    /// o[t] for the `t` queries at positions `start..start + t`, each seeing positions 0..=its own.
    pub fn encode(&self, enc: &mut Encoder, bind: &wgpu::BindGroup, t: usize, start: usize, heads: usize, d: usize) {
        let hd = d / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let params = AttentionParams { start: start as u32, d: d as u32, hd: hd as u32, scale };
        enc.dispatch(&self.kernel, bind, &params, [heads as u32, t as u32, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{axpy, dot, softmax_scaled};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::testing::{assert_close, random, read_f32, test_context};

    #[test]
    fn matches_the_cpu_loop_for_decode_and_prefill() {
        let ctx = test_context();
        // Head dims 18 and 200 (more than either kernel's threads: several dims per thread); context
        // past one 64-key tile. Both kernels: a GPU's (64 threads) and a CPU adapter's (8).
        // Both caches: f32, and f16 (the CPU then attends over the f16-rounded keys and values).
        let cases = [(3, 18, 1, 0), (3, 18, 7, 3), (2, 200, 1, 130), (4, 24, 70, 0)];
        let shapes = [true, false].into_iter().flat_map(|g| [KvDtype::F32, KvDtype::F16].map(|kv| (g, kv)));
        for ((gpu_shapes, kv), (heads, hd, t, start)) in shapes.flat_map(|s| cases.map(|c| (s, c))) {
            let attention = Attention::new(&ctx, hd, gpu_shapes, kv);
            let d = heads * hd;
            let total = start + t;
            let q: Vec<f32> = random(t * d, 51).iter().map(|v| v * 4.0).collect();
            let kc: Vec<f32> = random(total * d, 52).iter().map(|v| v * 4.0).collect();
            let vc = random(total * d, 53);
            let (qb, kb, vb) = (
                ctx.storage_init("q", &f32_bytes(&q)),
                ctx.storage_init("k", &kv.encode(&kc)),
                ctx.storage_init("v", &kv.encode(&vc)),
            );
            let (kc, vc) = (kv.decode(&kv.encode(&kc)), kv.decode(&kv.encode(&vc)));
            let o = ctx.storage("o", (t * d * 4) as u64);
            let bind = attention.bind(&ctx, &qb, &kb, &vb, &o);
            let mut params = ParamPages::default();
            let mut enc = Encoder::new(&ctx, &mut params);
            attention.encode(&mut enc, &bind, t, start, heads, d);
            enc.submit();
            let got = read_f32(&ctx, &o, t * d);
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![0f32; t * d];
            for i in 0..t {
                let visible = start + i + 1;
                for h in 0..heads {
                    let qh = &q[i * d + h * hd..][..hd];
                    let mut probs: Vec<f32> =
                        (0..visible).map(|j| dot(qh, &kc[j * d + h * hd..][..hd]) * scale).collect();
                    softmax_scaled(&mut probs, 1.0);
                    let oh = &mut want[i * d + h * hd..][..hd];
                    for (j, &p) in probs.iter().enumerate() {
                        axpy(oh, p, &vc[j * d + h * hd..][..hd]);
                    }
                }
            }
            assert_close(
                &got,
                &want,
                2e-5,
                &format!("gpu shapes {gpu_shapes} {kv:?} heads {heads} hd {hd} t {t} start {start}"),
            );
        }
    }
}
