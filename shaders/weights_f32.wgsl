// Weight rows stored as f32, padded with zeros to whole octets of 8 values.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

// Octet o of row `row` (rows of k_octets octets, one after another) as two quads.
fn wo(row: u32, o: u32, k_octets: u32) -> mat2x4<f32> {
    let i = row * k_octets + o;
    return mat2x4<f32>(w[2u * i], w[2u * i + 1u]);
}
