// Tiled matrix products for prefill: the same addressing as matvec.wgsl, 64 x 64 output tiles,
// each of the 256 threads computing 4 x 4 outputs from 16-deep slices staged in workgroup memory.

struct Params {
    m: u32,
    k: u32,
    k_quads: u32,
    n: u32,
    lda: u32,
    ldc: u32,
    a_off: u32,
    a_group_stride: u32,
    c_col: u32,
    c_group_stride: u32,
    accumulate: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
// k-major tiles: tile[kk * 64 + row].
var<workgroup> at: array<f32, 1024>;
var<workgroup> wt: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) li: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wg.z;
    let col0 = wg.x * BN;
    let row0 = wg.y * BM;
    let a_base = p.a_off + g * p.a_group_stride;
    let w_base = g * p.n * p.k_quads;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let e = lid + i * 256u;
            let r = e / BK;
            let kk = e % BK;
            var v = 0.0;
            if row0 + r < p.m && k0 + kk < p.k {
                v = a[(row0 + r) * p.lda + a_base + k0 + kk];
            }
            at[kk * BM + r] = v;
        }
        let r = lid / 4u;
        let qq = lid % 4u;
        let q = k0 / 4u + qq;
        var wv = vec4<f32>(0.0);
        if col0 + r < p.n && q < p.k_quads {
            wv = wq(w_base + (col0 + r) * p.k_quads + q);
        }
        wt[(qq * 4u) * BN + r] = wv.x;
        wt[(qq * 4u + 1u) * BN + r] = wv.y;
        wt[(qq * 4u + 2u) * BN + r] = wv.z;
        wt[(qq * 4u + 3u) * BN + r] = wv.w;
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ai = kk * BM + li.y * 4u;
            let wi = kk * BN + li.x * 4u;
            let av = vec4<f32>(at[ai], at[ai + 1u], at[ai + 2u], at[ai + 3u]);
            let wv4 = vec4<f32>(wt[wi], wt[wi + 1u], wt[wi + 2u], wt[wi + 3u]);
            acc0 += av.x * wv4;
            acc1 += av.y * wv4;
            acc2 += av.z * wv4;
            acc3 += av.w * wv4;
        }
        workgroupBarrier();
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + li.y * 4u + i;
        for (var jj = 0u; jj < 4u; jj++) {
            let j = col0 + li.x * 4u + jj;
            if m < p.m && j < p.n {
                let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
                if p.accumulate != 0u {
                    c[ci] += rows[i][jj];
                } else {
                    c[ci] = rows[i][jj];
                }
            }
        }
    }
}
