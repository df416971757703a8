// Attention of one decoded token (flash-decoding): workgroup (h, split) covers positions
// split * chunk .. of head h with an online softmax and writes its running max, sum and weighted
// value sum; the kernel after it (scores.wgsl, mode 2) combines the splits. RoPE and the KV-cache
// append are folded in: q, k and v arrive as the partial rows the qkv values kernel left, the
// workgroups rotate q, and the one whose split holds the new position rotates k, appends k and v to
// the caches and uses them from workgroup memory.
// This shape, a thread per position and a serial pass over each chunk, is for CPU adapters (lavapipe,
// SwiftShader), where it runs about twice as fast as decode_attention_lanes.wgsl, the GPUs' kernel.
// cos/sin come from a table computed on the CPU in f64: table[pos * half + j] = (cos, sin).

struct Params {
    pos: u32,
    d: u32,
    hd: u32,
    half: u32,
    splits: u32,
    chunk: u32,
    qkv_parts: u32,
    stride: u32,
    scale: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
// Head dims up to 4 * WG = 256 (checked on the CPU when the backend is built).
const DIMS_PER_THREAD: u32 = 4u;
// Unrotated q (0..256) and k (256..512) of this head.
var<workgroup> raw: array<f32, 512>;
var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;
var<workgroup> vs: array<f32, 256>;
var<workgroup> scores: array<f32, 64>;
var<workgroup> probs: array<f32, 64>;

// Element c of q (which 0), k (1) or v (2): the sum of the qkv kernel's split partials.
fn part_sum(which: u32, c: u32) -> f32 {
    var x = 0.0;
    for (var s = 0u; s < p.qkv_parts; s++) {
        x += qkv[(s * 3u + which) * p.stride + c];
    }
    return x;
}

// GPT-NeoX "rotate half" of dim i of the head stored at raw[base..].
fn rotated(base: u32, i: u32) -> f32 {
    let x = raw[base + i];
    if i >= 2u * p.half {
        return x;
    }
    let cs = table[p.pos * p.half + i % p.half];
    if i < p.half {
        return x * cs.x - raw[base + i + p.half] * cs.y;
    }
    return x * cs.x + raw[base + i - p.half] * cs.y;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.y;
    let head = h * p.hd;
    // Only the last split holds the new position.
    let last = split + 1u == p.splits;
    for (var c = lid; c < p.hd; c += WG) {
        raw[c] = part_sum(0u, head + c);
        if last {
            raw[256u + c] = part_sum(1u, head + c);
            vs[c] = part_sum(2u, head + c);
        }
    }
    workgroupBarrier();
    for (var c = lid; c < p.hd; c += WG) {
        qs[c] = rotated(0u, c);
        if last {
            ks[c] = rotated(256u, c);
            k_cache[p.pos * p.d + head + c] = ks[c];
            v_cache[p.pos * p.d + head + c] = vs[c];
        }
    }
    workgroupBarrier();
    let begin = split * p.chunk;
    let end = min(begin + p.chunk, p.pos + 1u);
    var m = -3.0e38;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = begin; j0 < end; j0 += WG) {
        let tile = min(WG, end - j0);
        let j = j0 + lid;
        var s = -3.0e38;
        if lid < tile {
            var dot_qk = 0.0;
            if j == p.pos {
                for (var c = 0u; c < p.hd; c++) {
                    dot_qk += qs[c] * ks[c];
                }
            } else {
                let kb = j * p.d + head;
                for (var c = 0u; c < p.hd; c++) {
                    dot_qk += qs[c] * k_cache[kb + c];
                }
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
            let jj = j0 + i;
            let vb = jj * p.d + head;
            for (var r = 0u; r < DIMS_PER_THREAD; r++) {
                let c = lid + r * WG;
                if c < p.hd {
                    // The new position's v from workgroup memory: the cache write is not read back.
                    if jj == p.pos {
                        acc[r] += pi * vs[c];
                    } else {
                        acc[r] += pi * v_cache[vb + c];
                    }
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let at = h * p.splits + split;
    if lid == 0u {
        out[at * 2u] = m;
        out[at * 2u + 1u] = l;
    }
    let acc_base = (p.d / p.hd) * p.splits * 2u;
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let c = lid + r * WG;
        if c < p.hd {
            out[acc_base + at * p.hd + c] = acc[r];
        }
    }
}
