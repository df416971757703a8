// Layer norm of rows of length d, eps inside the square root, biased variance. The blocks' norm has
// no weight or bias (affine = 0); the final norm has both. One workgroup per row.

struct Params {
    d: u32,
    in_row0: u32,
    affine: u32,
    eps: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn sum_all(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let src = (p.in_row0 + wg.x) * p.d;
    let dst = wg.x * p.d;
    var s = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        s += x[src + i];
    }
    let mean = sum_all(s, lid) / f32(p.d);
    var v = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let e = x[src + i] - mean;
        v += e * e;
    }
    let inv_std = inverseSqrt(sum_all(v, lid) / f32(p.d) + p.eps);
    for (var i = lid; i < p.d; i += WG) {
        var r = (x[src + i] - mean) * inv_std;
        if p.affine != 0u {
            r = r * weight[i] + bias[i];
        }
        y[dst + i] = r;
    }
}
