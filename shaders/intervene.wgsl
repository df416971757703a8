// Interventions on the general path: after a Pattention's normalisation, Theta's chosen columns are
// multiplied in place by their factors. Each invocation scales one (row, column) of the scores
// buffer: `pairs[first + i]` is (index within a row of `lda` values, factor bits). Dispatched only
// for the Pattentions that have interventions, so a pass without any runs none of it.

struct Params {
    rows: u32,
    lda: u32,
    first: u32,
    count: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read_write> theta: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let row = id.y;
    if i < p.count && row < p.rows {
        let pair = pairs[p.first + i];
        theta[row * p.lda + pair.x] *= bitcast<f32>(pair.y);
    }
}
