// Search by token on the device: every slot's score e · v_slot for one value matrix, stored
// transposed (row c of Vᵀ holds every slot's value for output dim c), so a slot's score is its
// column of Vᵀ weighted by e: Σ_c e[c] · Vᵀ[c, slot]. One thread per octet of slots, walking the
// rows of one `span` of this chunk (a group of q, k, v, or the rows a chunk holds of one matrix):
// neighbouring threads read neighbouring octets of a row. A span that starts inside its group (a
// matrix split into chunks) adds to the scores the earlier chunks left.
// A dtype prelude supplies binding 1, row_start() and wo(), octet o of a row as two quads.

struct Params {
    // Rows in this chunk and per span (grid y), and the matrix's rows per group (the hidden size).
    rows: u32,
    span: u32,
    d: u32,
    // The chunk's first row in the matrix.
    row0: u32,
    n: u32,
    k_octets: u32,
    // Where score 0 of group 0 goes.
    out_offset: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> e: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let o = id.x;
    if o >= p.k_octets {
        return;
    }
    let first = id.y * p.span;
    let end = min(first + p.span, p.rows);
    let g = (p.row0 + first) / p.d;
    let c0 = (p.row0 + first) % p.d;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var r = first; r < end; r++) {
        let w = wo(row_start(r, p.k_octets), o);
        let x = e[c0 + r - first];
        lo += x * w[0];
        hi += x * w[1];
    }
    var sums = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var i = 0u; i < 8u; i++) {
        let slot = 8u * o + i;
        if slot < p.n {
            let at = p.out_offset + g * p.n + slot;
            out[at] = select(0.0, out[at], c0 > 0u) + sums[i];
        }
    }
}
