// Weight rows stored as f32, padded with zeros to whole octets of 8 values.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

// Octet i as two quads.
fn wo(i: u32) -> mat2x4<f32> {
    return mat2x4<f32>(w[2u * i], w[2u * i + 1u]);
}

// Octet i · (a0, a1).
fn wo_dot(i: u32, a0: vec4<f32>, a1: vec4<f32>) -> f32 {
    let m = wo(i);
    return dot(m[0], a0) + dot(m[1], a1);
}
