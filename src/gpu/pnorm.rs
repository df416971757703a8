//! Pattention's normalisation Theta = f(S), row-wise over the n scores, in place; the three
//! `norm_activation_type` variants.

use super::context::{Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use crate::config::NormActivation;

shader_params!(PNormParams for "pnorm.wgsl" { n: u32, mode: u32 });

pub(crate) struct PNorm {
    kernel: Kernel,
}

impl PNorm {
    pub fn new(ctx: &GpuContext) -> PNorm {
        let source =
            format!("{}\n{}", include_str!("../../shaders/lib/gelu.wgsl"), include_str!("../../shaders/pnorm.wgsl"));
        PNorm { kernel: Kernel::new(ctx, "pnorm", &source, &[Access::ReadWrite]) }
    }

    pub fn bind(&self, ctx: &GpuContext, scores: &wgpu::Buffer) -> wgpu::BindGroup {
        self.kernel.bind(ctx, &[scores])
    }

    /// Normalises `rows` consecutive rows of `n` scores.
    pub fn encode(&self, enc: &mut Encoder, bind: &wgpu::BindGroup, rows: usize, n: usize, f: NormActivation) {
        let mode = match f {
            NormActivation::L2NormGelu => 0,
            NormActivation::GeluL2Norm => 1,
            NormActivation::Softmax => 2,
        };
        enc.dispatch(&self.kernel, bind, &PNormParams { n: n as u32, mode }, [rows as u32, 1, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{gelu, normalize_scores};
    use crate::gpu::context::{f32_bytes, ParamPages};
    use crate::gpu::testing::{assert_close, random, read_f32, test_context};

    fn run(s: &[f32], rows: usize, n: usize, f: NormActivation) -> Vec<f32> {
        let ctx = test_context();
        let norm = PNorm::new(&ctx);
        let buf = ctx.storage_init("s", &f32_bytes(s));
        let bind = norm.bind(&ctx, &buf);
        let mut params = ParamPages::default();
        let mut enc = Encoder::new(&ctx, &mut params);
        norm.encode(&mut enc, &bind, rows, n, f);
        enc.submit();
        read_f32(&ctx, &buf, rows * n)
    }

    #[test]
    fn all_variants_match_the_cpu_on_awkward_rows() {
        for f in [NormActivation::L2NormGelu, NormActivation::GeluL2Norm, NormActivation::Softmax] {
            // n below, above and far above the workgroup size, never a power of two.
            for (rows, n) in [(1, 37), (3, 83), (2, 3072 + 5), (4, 1)] {
                let s: Vec<f32> = random(rows * n, 31).iter().map(|v| v * 6.0).collect();
                let mut want = s.clone();
                want.chunks_exact_mut(n).for_each(|row| normalize_scores(row, f));
                assert_close(&run(&s, rows, n, f), &want, 2e-5, &format!("{f:?} {rows}x{n}"));
            }
        }
    }

    #[test]
    fn zero_rows_follow_the_cpu_definition() {
        for f in [NormActivation::L2NormGelu, NormActivation::GeluL2Norm, NormActivation::Softmax] {
            let mut want = vec![0f32; 2 * 5];
            want[5..].copy_from_slice(&[1.0, -2.0, 0.5, 3.0, 0.0]);
            let s = want.clone();
            want.chunks_exact_mut(5).for_each(|row| normalize_scores(row, f));
            assert_close(&run(&s, 2, 5, f), &want, 2e-5, &format!("{f:?}"));
        }
    }

    /// The erf approximation's accuracy, seen through l2_norm_gelu: a row whose L2 norm is exactly
    /// sqrt(n) is scaled by 1, so the output is gelu of the input itself.
    #[test]
    fn gelu_is_within_1e6_of_exact() {
        let n = 4096;
        let mut s: Vec<f32> = (0..n).map(|i| -8.0 + 16.0 * i as f32 / (n - 1) as f32).collect();
        let norm = s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let scale = (n as f64).sqrt() / norm;
        s.iter_mut().for_each(|v| *v = (*v as f64 * scale) as f32);
        let got = run(&s, 1, n, NormActivation::L2NormGelu);
        let worst = got.iter().zip(&s).map(|(g, &x)| (*g as f64 - gelu(x as f64)).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "max |gelu error| {worst:e}");
    }
}
