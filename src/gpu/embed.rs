//! Embedding lookup: the rows of the token ids, gathered from every chunk of the embedding.

use super::context::{groups_for, Access, Encoder, GpuContext, Kernel};
use super::params::shader_params;
use super::weights::{Dtype, Matrix};

shader_params!(EmbedParams for "embed.wgsl" { t: u32, d: u32, k_octets: u32, row0: u32, rows: u32 });

pub(crate) struct Embed {
    kernel: Kernel,
}

pub(crate) struct EmbedBinding {
    chunks: Vec<(wgpu::BindGroup, usize, usize)>,
    cols: usize,
    /// Octets of a stored row.
    k_octets: usize,
}

impl Embed {
    pub fn new(ctx: &GpuContext, dtype: Dtype) -> Embed {
        let source = format!("{}\n{}", dtype.prelude(), include_str!("../../shaders/embed.wgsl"));
        Embed { kernel: Kernel::new(ctx, "embed", &source, &[Access::Read, Access::Read, Access::ReadWrite]) }
    }

    pub fn bind(&self, ctx: &GpuContext, ids: &wgpu::Buffer, table: &Matrix, x: &wgpu::Buffer) -> EmbedBinding {
        let chunks =
            table.chunks.iter().map(|ch| (self.kernel.bind(ctx, &[ids, &ch.buffer, x]), ch.row0, ch.rows)).collect();
        EmbedBinding { chunks, cols: table.cols, k_octets: table.row_octets() }
    }

    /// x[t] = table[ids[t]] for the first `t` ids; one dispatch per chunk of the table.
    pub fn encode(&self, enc: &mut Encoder, b: &EmbedBinding, t: usize) {
        let octets = b.k_octets;
        for (bind, row0, rows) in &b.chunks {
            let [t, d, k_octets, row0, rows] = [t, b.cols, octets, *row0, *rows].map(|v| v as u32);
            let params = EmbedParams { t, d, k_octets, row0, rows };
            enc.dispatch(&self.kernel, bind, &params, [groups_for(octets, 64), t, 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::context::{u32_bytes, ParamPages};
    use crate::gpu::testing::stored;
    use crate::gpu::testing::{random, read_f32, test_context};
    use crate::gpu::weights::{row_bytes, Matrix, Store};

    #[test]
    fn gathers_rows_across_chunks() {
        let ctx = test_context();
        let (rows, d) = (23, 13);
        let table = random(rows * d, 11);
        for dtype in Dtype::ALL {
            // 8 rows per chunk (whole row groups when quantized): the ids fall in different chunks.
            let store = Store { dtype, max_chunk_bytes: 8 * row_bytes(d, dtype) as u64 };
            let m = Matrix::create(&ctx, "emb", rows, d, 1, store).unwrap();
            m.write_rows(&ctx, 0, &table).unwrap();
            assert_eq!(m.chunks.len(), 3);
            let ids = [22u32, 0, 7, 7, 14];
            let ids_buf = ctx.storage_init("ids", &u32_bytes(&ids));
            let x = ctx.storage("x", (ids.len() * d * 4) as u64);
            let embed = Embed::new(&ctx, dtype);
            let bind = embed.bind(&ctx, &ids_buf, &m, &x);
            let mut params = ParamPages::default();
            let mut enc = Encoder::new(&ctx, &mut params);
            embed.encode(&mut enc, &bind, ids.len());
            enc.submit();
            let got = read_f32(&ctx, &x, ids.len() * d);
            let table = stored(dtype, &table, d);
            for (t, &id) in ids.iter().enumerate() {
                for c in 0..d {
                    assert_eq!(got[t * d + c], table[id as usize * d + c], "{dtype:?} token {t} dim {c}");
                }
            }
        }
    }
}
