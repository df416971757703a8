//! Helpers for the op modules' GPU-vs-CPU tests.

use std::sync::{Arc, OnceLock};

use super::context::{bytes_to_f32, read_back, GpuContext};
use super::scores::{DecodeShape, CPU_MAX_ROWS, GPU_MAX_ROWS, MIN_WORKGROUPS};
use super::weights::Dtype;

/// One device for all tests of the crate. Without an adapter the tests fail, loudly: a silent pass
/// would hide that nothing was tested.
pub fn test_context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        pollster::block_on(GpuContext::new()).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
    })
    .clone()
}

/// Values in [-0.5, 0.5), reproducible from `seed`.
pub fn random(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| crate::sampling::pcg_hash(seed.wrapping_mul(0x9E37_79B9) ^ i) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

pub fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    bytes_to_f32(&read_bytes(ctx, buffer, len * 4))
}

/// The first `len` bytes of a storage buffer (a multiple of 4).
pub fn read_bytes(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<u8> {
    let bytes = len as u64;
    let staging = ctx.buffer("read", bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue.submit([enc.finish()]);
    pollster::block_on(read_back(ctx, &staging, bytes, None)).unwrap()
}

/// `values`, rows of `cols`, as `dtype` stores them: the weights a CPU check multiplies by.
pub fn stored(dtype: Dtype, values: &[f32], cols: usize) -> Vec<f32> {
    match dtype.quant() {
        Some(format) => {
            let mut blocks = Vec::new();
            for row in values.chunks(cols) {
                format.quantize_row(row, &mut blocks).unwrap();
            }
            format.dequantize_rows(cols, &blocks)
        }
        None if dtype == Dtype::F16 => values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        None => values.to_vec(),
    }
}

/// |got - want| <= tol * max(1, |want|) everywhere.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}: [{i}] GPU {g} vs CPU {w}");
    }
}

/// Every shape of the decode products the adapter can build for `dtype`: a GPU's launch target,
/// the fewest workgroups of a GPU's rows, and a CPU adapter's, both its own (a thread per 8 whole
/// rows) and at a GPU's launch target (`bench --min-workgroups`: its few threads shared by fewer
/// rows), each summing through workgroup memory and, where the adapter has them, through
/// subgroups.
pub fn decode_shapes(ctx: &GpuContext, dtype: Dtype) -> Vec<DecodeShape> {
    let reductions = [None].into_iter().chain(ctx.subgroup_lanes().map(Some));
    let launches =
        [(MIN_WORKGROUPS, GPU_MAX_ROWS), (1, GPU_MAX_ROWS), (1, CPU_MAX_ROWS), (MIN_WORKGROUPS, CPU_MAX_ROWS)];
    reductions
        .flat_map(|subgroup_lanes| {
            launches.map(|(min_workgroups, max_rows)| DecodeShape { dtype, min_workgroups, subgroup_lanes, max_rows })
        })
        .collect()
}
