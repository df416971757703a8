//! Layer norm over rows of the hidden size: without weight and bias inside the blocks, with them
//! for the final norm.

use super::context::{Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;

shader_params!(LayerNormParams for "layer_norm.wgsl" { d: u32, in_row0: u32, affine: u32, eps: f32 });

pub(crate) struct LayerNorm {
    kernel: Kernel,
    eps: f32,
}

impl LayerNorm {
    pub fn new(ctx: &GpuContext, eps: f64) -> LayerNorm {
        let source = include_str!("../../shaders/layer_norm.wgsl");
        let access = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        LayerNorm { kernel: Kernel::new(ctx, "layer_norm", source, &access), eps: eps as f32 }
    }

    /// Binds input x, the final norm's weight and bias (ignored unless `affine`), and output y.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[x, weight, bias, y])
    }

    /// y[r] = LN(x[first + r]) for `rows` rows of `d` values.
    pub fn encode(&self, enc: &mut Encoder, bind: &wgpu::BindGroup, rows: usize, first: usize, d: usize, affine: bool) {
        let params = LayerNormParams { d: d as u32, in_row0: first as u32, affine: affine as u32, eps: self.eps };
        enc.dispatch(&self.kernel, bind, &params, [rows as u32, 1, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{layer_norm, layer_norm_affine};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::testing::{assert_close, random, read_f32, test_context};

    #[test]
    fn matches_the_cpu_with_and_without_affine() {
        let ctx = test_context();
        let norm = LayerNorm::new(&ctx, 1e-5);
        // d not a multiple of the workgroup size nor of 16; rows offset by `first`.
        for (rows, first, d) in [(1, 0, 72), (3, 2, 300), (1, 4, 7)] {
            let x: Vec<f32> = random((rows + first) * d, 21).iter().map(|v| v * 3.0 + 0.7).collect();
            let weight = random(d, 22);
            let bias = random(d, 23);
            let (xb, wb, bb) = (
                ctx.storage_init("x", &f32_bytes(&x)),
                ctx.storage_init("w", &f32_bytes(&weight)),
                ctx.storage_init("b", &f32_bytes(&bias)),
            );
            for affine in [false, true] {
                let y = ctx.storage("y", (rows * d * 4) as u64);
                let bind = norm.bind(&ctx, &xb, &wb, &bb, &y);
                let mut params = ParamPages::default();
                let mut enc = Encoder::new(&ctx, &mut params);
                norm.encode(&mut enc, &bind, rows, first, d, affine);
                enc.submit();
                let got = read_f32(&ctx, &y, rows * d);
                let mut want = x[first * d..].to_vec();
                for row in want.chunks_exact_mut(d) {
                    if affine {
                        layer_norm_affine(row, &weight, &bias, 1e-5);
                    } else {
                        layer_norm(row, 1e-5);
                    }
                }
                assert_close(&got, &want, 2e-5, &format!("rows {rows} first {first} d {d} affine {affine}"));
            }
        }
    }
}
