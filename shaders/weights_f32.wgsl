// Weight rows stored as f32, padded with zeros to a multiple of 4 values: one vec4 per quad.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

fn wq(i: u32) -> vec4<f32> {
    return w[i];
}
