// Embedding lookup from one row chunk of the embedding: x[t] = emb[ids[t]] for the ids in the chunk.
// A dtype prelude supplies binding 1, row_start() and wo().

struct Params {
    t: u32,
    d: u32,
    k_octets: u32,
    row0: u32,
    rows: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let t = gid.y;
    if o >= p.k_octets || t >= p.t {
        return;
    }
    let id = ids[t];
    if id < p.row0 || id >= p.row0 + p.rows {
        return;
    }
    let v = wo(row_start(id - p.row0, p.k_octets), o);
    for (var i = 0u; i < 8u; i++) {
        if o * 8u + i < p.d {
            x[t * p.d + o * 8u + i] = v[i / 4u][i % 4u];
        }
    }
}
