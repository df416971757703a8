// The causal attention probabilities the attention kernel never materialises, for the inspector:
// probs[(h * tokens + start + t) * tokens + j] = softmax_j(q_t · k_j * scale) over j <= start + t.
// One workgroup per (head, query); three passes over the keys (max, sum, write) keep it exact for any
// context length without scratch memory.

struct Params {
    start: u32,
    d: u32,
    hd: u32,
    scale: f32,
    // Prompt length: the row length of probs.
    tokens: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<KvWord>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn score(t: u32, head: u32, j: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.hd; c++) {
        let i = j * p.d + head + c;
        s += q[t * p.d + head + c] * kv_elems(k_cache[i / KV_ELEMS])[i % KV_ELEMS];
    }
    return s * p.scale;
}

// Reduces partial[] with max (op 0) or + (op 1); every thread gets the result.
fn reduce(lid: u32, op: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] = select(max(partial[lid], partial[lid + s]), partial[lid] + partial[lid + s], op == 1u);
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    let head = h * p.hd;
    let visible = p.start + t + 1u;
    var m = -3.0e38;
    for (var j = lid; j < visible; j += WG) {
        m = max(m, score(t, head, j));
    }
    partial[lid] = m;
    m = reduce(lid, 0u);
    var l = 0.0;
    for (var j = lid; j < visible; j += WG) {
        l += exp(score(t, head, j) - m);
    }
    partial[lid] = l;
    l = reduce(lid, 1u);
    let row = (h * p.tokens + p.start + t) * p.tokens;
    for (var j = lid; j < visible; j += WG) {
        probs[row + j] = exp(score(t, head, j) - m) / l;
    }
}
