//! A buffer-to-buffer copy through a compute shader, and a read-only sum of the same buffer:
//! `bench` times them to measure the adapter's memory bandwidth with the same storage-buffer path
//! the model's kernels use (`shaders/copy.wgsl`, `shaders/read_probe.wgsl`).

use super::context::{groups_for, work_done, Access, Encoder, GpuContext, Kernel, ParamPages};
use super::params::shader_params;
use crate::error::Result;

shader_params!(CopyParams for "copy.wgsl" { quads: u32 });
shader_params!(ReadParams for "read_probe.wgsl" { quads: u32 });

/// Workgroups of the read-only sum: each thread walks the buffer in a grid-stride loop (on
/// lavapipe 8192 read faster than 512 or 65535).
const READ_WORKGROUPS: u32 = 8192;

pub struct CopyProbe {
    kernel: Kernel,
    read: Kernel,
    bind: wgpu::BindGroup,
    quads: usize,
    params: ParamPages,
    _buffers: (wgpu::Buffer, wgpu::Buffer),
}

impl CopyProbe {
    /// Two buffers of `bytes` each (capped at the device's largest binding).
    pub fn new(ctx: &GpuContext, bytes: u64) -> CopyProbe {
        let bytes = bytes.min(ctx.max_binding_bytes()) / 16 * 16;
        let kernel =
            Kernel::new(ctx, "copy", include_str!("../../shaders/copy.wgsl"), &[Access::Read, Access::ReadWrite]);
        let read = kernel.sibling(ctx, "read", include_str!("../../shaders/read_probe.wgsl"));
        let (src, dst) = (ctx.storage("copy src", bytes), ctx.storage("copy dst", bytes));
        let bind = kernel.bind(ctx, &[&src, &dst]);
        CopyProbe {
            kernel,
            read,
            bind,
            quads: (bytes / 16) as usize,
            params: ParamPages::default(),
            _buffers: (src, dst),
        }
    }

    /// Bytes one copy moves: each byte is read once and written once.
    pub fn bytes_moved(&self) -> u64 {
        2 * 16 * self.quads as u64
    }

    /// Bytes one read-only sum reads.
    pub fn bytes_read(&self) -> u64 {
        16 * self.quads as u64
    }

    /// Copies the source buffer into the destination `repeats` times in one submission and waits
    /// (repeats amortise the submission's latency, which a fast GPU copies 256 MiB within).
    pub async fn run(&mut self, ctx: &GpuContext, repeats: usize) -> Result<()> {
        let mut enc = Encoder::new(ctx, &mut self.params);
        let groups = groups_for(self.quads, 256).min(ctx.limits.max_compute_workgroups_per_dimension);
        for _ in 0..repeats {
            enc.dispatch(&self.kernel, &self.bind, &CopyParams { quads: self.quads as u32 }, [groups, 1, 1]);
        }
        enc.submit();
        work_done(ctx).await
    }

    /// Sums the source buffer `repeats` times (each thread's sum to the destination's start) in
    /// one submission and waits.
    pub async fn run_read(&mut self, ctx: &GpuContext, repeats: usize) -> Result<()> {
        let mut enc = Encoder::new(ctx, &mut self.params);
        let groups = READ_WORKGROUPS.min(groups_for(self.quads, 256));
        for _ in 0..repeats {
            enc.dispatch(&self.read, &self.bind, &ReadParams { quads: self.quads as u32 }, [groups, 1, 1]);
        }
        enc.submit();
        work_done(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::context::f32_bytes;
    use crate::gpu::testing::{random, read_f32, test_context};

    #[test]
    fn copies_the_whole_buffer() {
        let ctx = test_context();
        let mut probe = CopyProbe::new(&ctx, 4096 * 16 + 12);
        let data = random(probe.quads * 4, 91);
        ctx.queue.write_buffer(&probe._buffers.0, 0, &f32_bytes(&data));
        pollster::block_on(probe.run(&ctx, 2)).unwrap();
        assert_eq!(read_f32(&ctx, &probe._buffers.1, data.len()), data);
        assert_eq!(probe.bytes_moved(), 2 * 4096 * 16);
    }

    #[test]
    fn the_read_probe_reads_every_value() {
        let ctx = test_context();
        let mut probe = CopyProbe::new(&ctx, 4096 * 16);
        let data: Vec<f32> = (0..probe.quads * 4).map(|i| (i % 7) as f32).collect();
        ctx.queue.write_buffer(&probe._buffers.0, 0, &f32_bytes(&data));
        pollster::block_on(probe.run_read(&ctx, 1)).unwrap();
        let sums = read_f32(&ctx, &probe._buffers.1, data.len());
        assert_eq!(sums.iter().sum::<f32>(), data.iter().sum::<f32>());
        assert_eq!(probe.bytes_read(), 4096 * 16);
    }
}
