// Causal multi-head attention over the KV cache: query t (at position start + t) of head h sees the
// cached positions 0..=start + t. One workgroup per (head, query); keys are taken TILE at a time
// with an online softmax (running max and sum), so any context length works: a thread per key
// scores the tile, then every thread adds the tile's values into its DIMS_PER_THREAD dims.
// WG and DIMS_PER_THREAD (head dims over WG, rounded up) are prepended by attention.rs: 64 threads
// on a GPU, 8 on a CPU adapter, where lavapipe switches between a workgroup's SIMD groups of 8
// lanes at every barrier.

struct Params {
    start: u32,
    d: u32,
    hd: u32,
    scale: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<f32>;
@group(0) @binding(2) var<storage, read> v_cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

const TILE: u32 = 64u;
// Head dims up to 256 (checked on the CPU when the backend is built).
var<workgroup> qs: array<f32, 256>;
var<workgroup> scores: array<f32, TILE>;
var<workgroup> probs: array<f32, TILE>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    let head = h * p.hd;
    let visible = p.start + t + 1u;
    for (var c = lid; c < p.hd; c += WG) {
        qs[c] = q[t * p.d + head + c];
    }
    workgroupBarrier();
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var j0 = 0u; j0 < visible; j0 += TILE) {
        let tile = min(TILE, visible - j0);
        for (var i = lid; i < tile; i += WG) {
            let kb = (j0 + i) * p.d + head;
            var dot_qk = 0.0;
            for (var c = 0u; c < p.hd; c++) {
                dot_qk += qs[c] * k_cache[kb + c];
            }
            scores[i] = dot_qk * p.scale;
        }
        workgroupBarrier();
        var m_new = m;
        for (var i = 0u; i < tile; i++) {
            m_new = max(m_new, scores[i]);
        }
        for (var i = lid; i < tile; i += WG) {
            probs[i] = exp(scores[i] - m_new);
        }
        workgroupBarrier();
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            acc[r] *= alpha;
        }
        for (var i = 0u; i < tile; i++) {
            let pi = probs[i];
            l += pi;
            let vb = (j0 + i) * p.d + head;
            // Dims past the head's (in the last r) add a clamped element and are never stored: a
            // branch around the load costs lavapipe more than the whole sum.
            for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                acc[r] += pi * v_cache[vb + min(lid + r * WG, p.hd - 1u)];
            }
        }
        m = m_new;
        // The next tile overwrites scores and probs.
        workgroupBarrier();
    }
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            o[t * p.d + head + c] = acc[r] / l;
        }
    }
}
