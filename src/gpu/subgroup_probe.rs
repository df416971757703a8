//! Whether the decode products may sum through subgroup shuffles on this device: the adapter
//! offers subgroups, and a probe kernel finds the lane layout the reduction assumes
//! (`shaders/subgroup_probe.wgsl`). Drivers cut a 1-D workgroup into subgroups in thread order,
//! but nothing in WebGPU or Vulkan promises it, so it is checked once per device rather than
//! trusted.

use super::context::{read_storage, Access, Encoder, GpuContext, Kernel, ParamPages};
use super::params::shader_params;
use crate::error::Result;

shader_params!(ProbeParams for "subgroup_probe.wgsl" { lanes: u32 });

/// Threads of the probe's workgroup: the decode products' workgroup size.
const THREADS: usize = 256;

/// The lanes that may sum through shuffles, or None (no subgroups, or a layout the shuffles
/// would get wrong).
pub(crate) async fn subgroup_lanes(ctx: &GpuContext) -> Result<Option<u32>> {
    let lanes = ctx.info.subgroup_min_size;
    if !ctx.device.features().contains(wgpu::Features::SUBGROUP) || !lanes.is_power_of_two() || lanes < 2 {
        return Ok(None);
    }
    Ok(shuffles_hold(ctx, lanes).await?.then_some(lanes))
}

/// Whether shuffles across `lanes` lanes see the layout the reduction assumes.
async fn shuffles_hold(ctx: &GpuContext, lanes: u32) -> Result<bool> {
    // A driver that refuses the probe's shuffles gets the workgroup-memory sums.
    let source = include_str!("../../shaders/subgroup_probe.wgsl");
    let made = ctx.refusals("the subgroup probe", || Kernel::new(ctx, "subgroup probe", source, &[Access::ReadWrite]));
    let Ok(kernel) = made.await else { return Ok(false) };
    let ok = ctx.storage("subgroup probe", THREADS as u64 * 4);
    let bind = kernel.bind(ctx, &[&ok]);
    let mut pages = ParamPages::default();
    let mut enc = Encoder::new(ctx, &mut pages);
    enc.dispatch(&kernel, &bind, &ProbeParams { lanes }, [1, 1, 1]);
    enc.submit();
    let read = read_storage(ctx, &[(&ok, THREADS as u64 * 4)]).await?;
    Ok(read[0].chunks_exact(4).all(|w| w == 1u32.to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::test_context;

    #[test]
    fn the_probe_accepts_the_adapters_subgroups_and_refuses_wider_ones() {
        let ctx = test_context();
        if !ctx.device.features().contains(wgpu::Features::SUBGROUP) {
            eprintln!("the adapter has no subgroups: nothing to probe");
            return;
        }
        let (min, max) = (ctx.info.subgroup_min_size, ctx.info.subgroup_max_size);
        assert_eq!(ctx.subgroup_lanes(), Some(min), "drivers lay lanes out in thread order");
        // Shuffles past the subgroup read other threads' values (or nothing): the probe must see it.
        assert!(!pollster::block_on(shuffles_hold(&ctx, 2 * max)).unwrap());
    }
}
