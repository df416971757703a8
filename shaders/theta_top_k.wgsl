// The k largest entries of each Theta row as (slot, value bits), largest first, ties by lower slot
// (the order of `inspect::top_k`). One workgroup per row; each of the k rounds finds the best entry
// that comes after the previous round's pick in that order, so nothing needs sorting or scratch.

struct Params {
    n: u32,
    // Row r of this map starts at theta[r * lda + offset] (q, k and v share rows of the scores).
    lda: u32,
    offset: u32,
    k: u32,
    // Output row of this chunk's first row: rows of a long prompt arrive a chunk at a time.
    row0: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> theta: array<f32>;
@group(0) @binding(1) var<storage, read_write> top: array<u32>;

const WG: u32 = 64u;
const NONE: u32 = 0xffffffffu;
var<workgroup> best_value: array<f32, 64>;
var<workgroup> best_slot: array<u32, 64>;

// Whether (v, i) comes before (w, j): larger value first, then lower slot.
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wg.x * p.lda + p.offset;
    var prev_value = 0.0;
    var prev_slot = NONE;
    for (var r = 0u; r < p.k; r++) {
        var value = 0.0;
        var slot = NONE;
        for (var j = lid; j < p.n; j += WG) {
            let v = theta[base + j];
            let after_prev = prev_slot == NONE || before(prev_value, prev_slot, v, j);
            if after_prev && (slot == NONE || before(v, j, value, slot)) {
                value = v;
                slot = j;
            }
        }
        best_value[lid] = value;
        best_slot[lid] = slot;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if lid < s {
                let other = best_slot[lid + s];
                let mine = best_slot[lid];
                if other != NONE && (mine == NONE || before(best_value[lid + s], other, best_value[lid], mine)) {
                    best_value[lid] = best_value[lid + s];
                    best_slot[lid] = other;
                }
            }
            workgroupBarrier();
        }
        prev_value = best_value[0];
        prev_slot = best_slot[0];
        if lid == 0u {
            let out = ((p.row0 + wg.x) * p.k + r) * 2u;
            top[out] = prev_slot;
            top[out + 1u] = bitcast<u32>(prev_value);
        }
        // Everyone has read the winner before the next round overwrites the scratch.
        workgroupBarrier();
    }
}
