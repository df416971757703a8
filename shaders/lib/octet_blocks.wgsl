// Appended to the float dtype preludes (weights_f32.wgsl, weights_f16.wgsl): their blocks are single
// octets, so the decode products' block loops step an octet at a time.
const BLOCK_OCTETS: u32 = 1u;
const BLOCK_QUADS: u32 = 2u;

// Octet b of row `row` (rows of k_blocks octets) · the activation octet (a[0], a[1]).
fn wb_dot(row: u32, b: u32, k_blocks: u32, a: array<vec4<f32>, 2>) -> f32 {
    return wo_dot(row, b, k_blocks, a[0], a[1]);
}
