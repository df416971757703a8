// Appended to the float dtype preludes (weights_f32.wgsl, weights_f16.wgsl): their blocks are single
// octets, so the decode products' block loops step an octet at a time.
const BLOCK_OCTETS: u32 = 1u;
const BLOCK_QUADS: u32 = 2u;

// Octet b of the row at `start` (see row_start) · the activation octet (a[0], a[1]).
fn wb_dot(start: u32, b: u32, a: array<vec4<f32>, 2>) -> f32 {
    return wo_dot(start, b, a[0], a[1]);
}
