// Column sums of a Theta map: sums[j] += Σ_rows theta[row * lda + offset + j]. Added to, so the
// chunks of a long prompt accumulate into one buffer (created zeroed).

struct Params {
    rows: u32,
    n: u32,
    lda: u32,
    offset: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> theta: array<f32>;
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if j >= p.n {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += theta[r * p.lda + p.offset + j];
    }
    sums[j] += s;
}
