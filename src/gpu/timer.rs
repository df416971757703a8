//! GPU time per dispatch, for `bench`: each dispatch of a profiled pass gets its own compute pass
//! whose start and end the device stamps (`timestamp-query`). Where the adapter lacks the feature
//! there is no timer, and `bench` says so instead of printing times.

use super::context::{read_back, GpuContext};
use crate::error::Result;

/// Dispatches one profiled pass may time (two stamps each, within wgpu's 4096 queries per set);
/// a 1.5B decode step is under 300.
pub(crate) const MAX_TIMED: u32 = 2048;

pub(crate) struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    read: wgpu::Buffer,
}

impl Timer {
    /// A timer, or None when the device cannot stamp compute passes.
    pub fn new(ctx: &GpuContext) -> Option<Timer> {
        if !ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dispatch times"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * MAX_TIMED,
        });
        use wgpu::BufferUsages as U;
        let bytes = 2 * MAX_TIMED as u64 * wgpu::QUERY_SIZE as u64;
        let resolved = ctx.buffer("dispatch times", bytes, U::QUERY_RESOLVE | U::COPY_SRC);
        let read = ctx.buffer("dispatch times read-back", bytes, U::MAP_READ | U::COPY_DST);
        Some(Timer { queries, resolved, read })
    }

    /// The stamps of dispatch `index` (the first MAX_TIMED of a pass; None after them).
    pub fn writes(&self, index: usize) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = u32::try_from(index).ok().filter(|&i| i < MAX_TIMED)?;
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Records the copy of the first `dispatches` dispatches' stamps to the read-back buffer.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder, dispatches: usize) {
        let stamps = 2 * dispatches.min(MAX_TIMED as usize) as u32;
        if stamps > 0 {
            encoder.resolve_query_set(&self.queries, 0..stamps, &self.resolved, 0);
            encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.read, 0, stamps as u64 * wgpu::QUERY_SIZE as u64);
        }
    }

    /// Nanoseconds each of the first `dispatches` dispatches took, once the submission holding
    /// them has finished.
    pub async fn read(&self, ctx: &GpuContext, dispatches: usize) -> Result<Vec<u64>> {
        let n = dispatches.min(MAX_TIMED as usize);
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = read_back(ctx, &self.read, 2 * n as u64 * wgpu::QUERY_SIZE as u64, None).await?;
        let period = ctx.queue.get_timestamp_period() as f64;
        let stamp = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or_default());
        // A driver may stamp out of order across passes; a negative span counts as zero.
        Ok((0..n).map(|i| (stamp(2 * i + 1).saturating_sub(stamp(2 * i)) as f64 * period) as u64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::context::{Access, Encoder, Kernel, ParamPages};
    use crate::gpu::copy::CopyParams;
    use crate::gpu::testing::test_context;

    #[test]
    fn times_each_dispatch() {
        let ctx = test_context();
        let Some(timer) = Timer::new(&ctx) else {
            panic!("{} has no timestamp queries", ctx.adapter_name());
        };
        let kernel =
            Kernel::new(&ctx, "copy", include_str!("../../shaders/copy.wgsl"), &[Access::Read, Access::ReadWrite]);
        let quads = 1 << 20;
        let (src, dst) = (ctx.storage("src", quads * 16), ctx.storage("dst", quads * 16));
        let bind = kernel.bind(&ctx, &[&src, &dst]);
        let mut pages = ParamPages::default();
        let mut enc = Encoder::timed(&ctx, &mut pages, &timer);
        for n in [quads / 64, quads] {
            enc.dispatch(&kernel, &bind, &CopyParams { quads: n as u32 }, [64, 1, 1]);
        }
        enc.submit();
        let times = pollster::block_on(timer.read(&ctx, 2)).unwrap();
        assert!(times[0] > 0 && times[1] > times[0], "{times:?}");
    }
}
