// The input block b of the decode products' loops (lib/rows.wgsl): quads BLOCK_QUADS * b.. of the
// workgroup's input row (the kernel's input_quad()), each thread loading them itself.
fn block_input(b: u32, lid: u32) -> array<vec4<f32>, BLOCK_QUADS> {
    var a: array<vec4<f32>, BLOCK_QUADS>;
    for (var i = 0u; i < BLOCK_QUADS; i++) {
        a[i] = input_quad(BLOCK_QUADS * b + i);
    }
    return a;
}
