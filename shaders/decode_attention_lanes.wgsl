// Attention of one decoded token on a GPU. lib/decode_attention.wgsl (prepended) holds the
// parameters, bindings, the RoPE and KV-cache prologue and what the partial results are;
// decode_attention.wgsl, for CPU adapters, leaves the same. The workgroup takes SLOTS positions at a
// time, LANES threads per position, so a position's key and value rows are read by neighbouring
// threads (coalesced) and the positions' loads are in flight together: a long serial chain of
// loads per thread is what a real GPU cannot hide.

// DIMS_PER_LANE, head dims over LANES rounded up, is prepended by decode_attention.rs.
@group(0) @binding(2) var<storage, read_write> k_cache: array<KvWord>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<KvWord>;

// Writes this head's k and v at `at` of the caches, a whole word per thread.
fn append_kv(lid: u32, threads: u32, at: u32) {
    for (var w = lid; w < p.hd / KV_ELEMS; w += threads) {
        let c = KV_ELEMS * w;
        let second = min(c + 1u, p.hd - 1u);
        k_cache[at / KV_ELEMS + w] = kv_word(vec2<f32>(ks[c], ks[second]));
        v_cache[at / KV_ELEMS + w] = kv_word(vec2<f32>(vs[c], vs[second]));
    }
}

const WG: u32 = 256u;
const LANES: u32 = 16u;
const SLOTS: u32 = 16u;
// Each lane's share of each slot's q·k, then each slot's scaled score.
var<workgroup> dots: array<f32, WG>;
var<workgroup> scores: array<f32, SLOTS>;
// The slots' value sums and probability sums, added pairwise at the end.
var<workgroup> fold: array<f32, 2048>;
var<workgroup> fold_l: array<f32, 8>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.y;
    let head = h * p.hd;
    let slot = lid / LANES;
    let lane = lid % LANES;
    // Only the last split holds the new position.
    load_head(lid, WG, head, split + 1u == p.splits);
    let begin = split * p.chunk;
    let end = min(begin + p.chunk, p.pos + 1u);
    // Every thread follows the same running max; each slot sums its own positions' probabilities.
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_LANE>;
    for (var j0 = begin; j0 < end; j0 += SLOTS) {
        let j = j0 + slot;
        let valid = j < end;
        // This lane's dims of key j dotted with q, and of value j loaded alongside.
        var part = 0.0;
        var v: array<f32, DIMS_PER_LANE>;
        let row = j * p.d + head;
        for (var i = 0u; i < DIMS_PER_LANE; i++) {
            let c = lane + i * LANES;
            if valid && c < p.hd {
                // The new position's k and v from workgroup memory: the cache writes are not read back.
                if j == p.pos {
                    part += qs[c] * ks[c];
                    v[i] = vs[c];
                } else {
                    let at = row + c;
                    part += qs[c] * kv_elems(k_cache[at / KV_ELEMS])[at % KV_ELEMS];
                    v[i] = kv_elems(v_cache[at / KV_ELEMS])[at % KV_ELEMS];
                }
            }
        }
        dots[lid] = part;
        workgroupBarrier();
        if lid < SLOTS {
            var dot_qk = 0.0;
            for (var i = 0u; i < LANES; i++) {
                dot_qk += dots[lid * LANES + i];
            }
            scores[lid] = select(-3.0e38, dot_qk * p.scale, j0 + lid < end);
        }
        workgroupBarrier();
        var m_new = m;
        for (var i = 0u; i < SLOTS; i++) {
            m_new = max(m_new, scores[i]);
        }
        let prob = select(0.0, exp(scores[slot] - m_new), valid);
        let alpha = exp(m - m_new);
        l = l * alpha + prob;
        for (var i = 0u; i < DIMS_PER_LANE; i++) {
            acc[i] = acc[i] * alpha + prob * v[i];
        }
        m = m_new;
        // The next pass overwrites dots and scores.
        workgroupBarrier();
    }
    // Add the slots pairwise: slots width..2 width hand their sums to slots 0..width.
    for (var width = SLOTS / 2u; width > 0u; width /= 2u) {
        if slot >= width && slot < 2u * width {
            for (var i = 0u; i < DIMS_PER_LANE; i++) {
                let c = lane + i * LANES;
                if c < p.hd {
                    fold[(slot - width) * MAX_HD + c] = acc[i];
                }
            }
            if lane == 0u {
                fold_l[slot - width] = l;
            }
        }
        workgroupBarrier();
        if slot < width {
            for (var i = 0u; i < DIMS_PER_LANE; i++) {
                let c = lane + i * LANES;
                if c < p.hd {
                    acc[i] += fold[slot * MAX_HD + c];
                }
            }
            l += fold_l[slot];
        }
        workgroupBarrier();
    }
    let at = h * p.splits + split;
    if lid == 0u {
        out[at * 2u] = m;
        out[at * 2u + 1u] = l;
    }
    let acc_base = (p.d / p.hd) * p.splits * 2u;
    if slot == 0u {
        for (var i = 0u; i < DIMS_PER_LANE; i++) {
            let c = lane + i * LANES;
            if c < p.hd {
                out[acc_base + at * p.hd + c] = acc[i];
            }
        }
    }
}
