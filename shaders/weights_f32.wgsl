// Weight rows stored as f32, padded with zeros to whole octets of 8 values.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

// Octet i as two quads.
fn wo(i: u32) -> mat2x4<f32> {
    return mat2x4<f32>(w[2u * i], w[2u * i + 1u]);
}
