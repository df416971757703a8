// dot_8_rows() for the dtypes whose rows the decode products read one at a time (all but q4,
// weights_q4_rows.wgsl): block b of the 8 rows starting at r (see row_starts), times the input block
// a, added to lo (rows 0..4) and hi (rows 4..8).
fn dot_8_rows(
    r: array<u32, 8>,
    b: u32,
    a: array<vec4<f32>, BLOCK_QUADS>,
    lo: ptr<function, vec4<f32>>,
    hi: ptr<function, vec4<f32>>,
) {
    dot_rows_each(r, b, a, lo, hi);
}
