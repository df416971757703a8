// The logit lens's normaliser: log Σ exp(logits) of each row of n logits, max-subtracted, one
// workgroup per row; with a row's top-k logits (theta_top_k.wgsl over the same rows) it gives their
// probabilities, exp(logit - lse), without reading the whole vocabulary back.

struct Params {
    n: u32,
    // Output row of this dispatch's first row (rows arrive a block and a prompt chunk at a time).
    row0: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wg.x * p.n;
    var m = -3.0e38;
    for (var j = lid; j < p.n; j += WG) {
        m = max(m, logits[base + j]);
    }
    red[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        sum += exp(logits[base + j] - mx);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        lse[p.row0 + wg.x] = mx + log(red[0]);
    }
}
