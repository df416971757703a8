// Matrix-vector products for decoding: c[m, col] (+)= sum_k a[m, k] * w[row, k] over the weight rows
// of one chunk. Rows are split into groups (q, k, v stacked); group g reads its activations at
// a_off + g * a_group_stride and writes columns c_col + g * c_group_stride + j.
// A dtype prelude (weights_f32.wgsl or weights_f16.wgsl) supplies binding 1 and wq().

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

// Threads per weight row: neighbouring threads read neighbouring quads of the same row.
const TPR: u32 = 16u;
const ROWS: u32 = 16u;
var<workgroup> partial: array<f32, 256>;

fn a4(base: u32, k0: u32) -> vec4<f32> {
    if k0 + 4u <= p.k {
        return vec4<f32>(a[base + k0], a[base + k0 + 1u], a[base + k0 + 2u], a[base + k0 + 3u]);
    }
    // The last quad of a row whose length is not a multiple of 4: the weights are zero-padded,
    // the activations past k belong to something else and are masked.
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if k0 + i < p.k {
            v[i] = a[base + k0 + i];
        }
    }
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let j = wg.x * ROWS + lid / TPR;
    let m = wg.y;
    let g = wg.z;
    let a_base = m * p.lda + p.a_off + g * p.a_group_stride;
    var acc = 0.0;
    if j < p.n {
        let w_base = (g * p.n + j) * p.k_quads;
        for (var q = lane; q < p.k_quads; q += TPR) {
            acc += dot(wq(w_base + q), a4(a_base, q * 4u));
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    if lane == 0u && j < p.n {
        var s = 0.0;
        for (var i = 0u; i < TPR; i++) {
            s += partial[lid + i];
        }
        let ci = m * p.ldc + p.c_col + g * p.c_group_stride + j;
        if p.accumulate != 0u {
            c[ci] += s;
        } else {
            c[ci] = s;
        }
    }
}
