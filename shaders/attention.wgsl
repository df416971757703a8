// Causal multi-head attention over the KV cache: query t (at position start + t) of head h sees the
// cached positions 0..=start + t. One workgroup per (head, query); keys are taken 64 at a time
// with an online softmax (running max and sum), so any context length works.

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

const WG: u32 = 64u;
// Head dims up to 4 * WG = 256 (checked on the CPU when the backend is built).
const DIMS_PER_THREAD: u32 = 4u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> scores: array<f32, 64>;
var<workgroup> probs: array<f32, 64>;

@compute @workgroup_size(64)
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
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = 0u; j0 < visible; j0 += WG) {
        let tile = min(WG, visible - j0);
        let j = j0 + lid;
        var s = -3.0e38;
        if lid < tile {
            var dot_qk = 0.0;
            let kb = j * p.d + head;
            for (var c = 0u; c < p.hd; c++) {
                dot_qk += qs[c] * k_cache[kb + c];
            }
            s = dot_qk * p.scale;
        }
        scores[lid] = s;
        workgroupBarrier();
        var m_new = m;
        for (var i = 0u; i < tile; i++) {
            m_new = max(m_new, scores[i]);
        }
        probs[lid] = select(0.0, exp(s - m_new), lid < tile);
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
            for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                let c = lid + r * WG;
                if c < p.hd {
                    acc[r] += pi * v_cache[vb + c];
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            o[t * p.d + head + c] = acc[r] / l;
        }
    }
}
