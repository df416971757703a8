// Weight rows stored as f16 packed two per u32 (no shader-f16 feature needed), padded with zeros
// to a multiple of 4 values: one vec2<u32> per quad.
@group(0) @binding(1) var<storage, read> w: array<vec2<u32>>;

fn wq(i: u32) -> vec4<f32> {
    let v = w[i];
    return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
}
