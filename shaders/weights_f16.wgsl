// Weight rows stored as f16 packed two per u32 (no shader-f16 feature needed), padded with zeros
// to whole octets of 8 values: one vec4<u32> per octet, read in one load. Software Vulkan runs
// each load as a loop over its lanes, paying more per load and lane than per byte.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

// Where row `row` of a matrix of k_octets octets per row starts (rows one after another), for wo()
// and wb_dot().
fn row_start(row: u32, k_octets: u32) -> u32 {
    return row * k_octets;
}

// Octet o of the row at `start` as two quads.
fn wo(start: u32, o: u32) -> mat2x4<f32> {
    let v = w[start + o];
    return mat2x4<f32>(
        vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
        vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)),
    );
}
