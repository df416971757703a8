// Weight rows stored as f32, padded with zeros to whole octets of 8 values.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

// Where row `row` of a matrix of k_octets octets per row starts (rows one after another), for wo()
// and wb_dot().
fn row_start(row: u32, k_octets: u32) -> u32 {
    return row * k_octets;
}

// Octet o of the row at `start` as two quads.
fn wo(start: u32, o: u32) -> mat2x4<f32> {
    let i = start + o;
    return mat2x4<f32>(w[2u * i], w[2u * i + 1u]);
}
