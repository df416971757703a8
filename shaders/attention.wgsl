// Causal multi-head attention over the KV cache: query t (at position start + t) of head h sees the
// cached positions 0..=start + t. One workgroup per (head, query); lib/attend.wgsl (prepended, with
// WG and DIMS_PER_THREAD) walks the positions a tile at a time, so any context length works.

struct Params {
    start: u32,
    d: u32,
    hd: u32,
    scale: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<KvWord>;
@group(0) @binding(2) var<storage, read> v_cache: array<KvWord>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

// Head dims up to 256 (checked on the CPU when the backend is built).
var<workgroup> qs: array<f32, 256>;

// The head's key j, a word (KV_ELEMS dims) per load: a head starts on a word (head dims are whole
// words).
fn key_dot(j: u32, head: u32) -> f32 {
    let kb = (j * p.d + head) / KV_ELEMS;
    var dot_qk = 0.0;
    for (var w = 0u; w < p.hd / KV_ELEMS; w++) {
        let k = kv_elems(k_cache[kb + w]);
        for (var e = 0u; e < KV_ELEMS; e++) {
            dot_qk += qs[KV_ELEMS * w + e] * k[e];
        }
    }
    return dot_qk;
}

fn add_value(j: u32, prob: f32, lid: u32, head: u32) {
    let vb = j * p.d + head;
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let i = vb + value_dim(lid, r);
        acc[r] += prob * kv_elems(v_cache[i / KV_ELEMS])[i % KV_ELEMS];
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    let head = h * p.hd;
    for (var c = lid; c < p.hd; c += WG) {
        qs[c] = q[t * p.d + head + c];
    }
    workgroupBarrier();
    let ml = attend(lid, head, 0u, p.start + t + 1u);
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            o[t * p.d + head + c] = acc[r] / ml.y;
        }
    }
}
