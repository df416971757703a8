// q4's dot_8_rows() for the decode products (lib/rows.wgsl): block b of the 8 rows starting at r,
// times the input block a, added to lo (rows 0..4) and hi (rows 4..8). Where the 8 rows are a whole
// row group (WHOLE_ROW_GROUPS, src/gpu/scores.rs: the kernels' rows from a multiple of 8 of
// matrices whose groups of rows are too), block b's 8 scales are side by side (lib/row_groups.wgsl):
// 2 loads instead of 8, each a loop over the lanes on lavapipe. Otherwise a row at a time.
fn dot_8_rows(
    r: array<u32, 8>,
    b: u32,
    a: array<vec4<f32>, 8>,
    lo: ptr<function, vec4<f32>>,
    hi: ptr<function, vec4<f32>>,
) {
    if !WHOLE_ROW_GROUPS {
        dot_rows_each(r, b, a, lo, hi);
        return;
    }
    // Row 0's quants in this superblock, after the group's 8 scale quads; row i's QUANT_QUADS on.
    let sb = superblock_at(r[0], b);
    let g = b % 4u;
    let dm_lo = w[sb - ROW_GROUP + 2u * g];
    let dm_hi = w[sb - ROW_GROUP + 2u * g + 1u];
    let q = sb + g;
    let x_lo = vec4<f32>(
        q4_dot(w[q], a),
        q4_dot(w[q + QUANT_QUADS], a),
        q4_dot(w[q + 2u * QUANT_QUADS], a),
        q4_dot(w[q + 3u * QUANT_QUADS], a),
    );
    let x_hi = vec4<f32>(
        q4_dot(w[q + 4u * QUANT_QUADS], a),
        q4_dot(w[q + 5u * QUANT_QUADS], a),
        q4_dot(w[q + 6u * QUANT_QUADS], a),
        q4_dot(w[q + 7u * QUANT_QUADS], a),
    );
    let t = q4_input_sum(a);
    *lo += q4_halves(dm_lo, 0u) * x_lo + q4_halves(dm_lo, 16u) * t;
    *hi += q4_halves(dm_hi, 0u) * x_hi + q4_halves(dm_hi, 16u) * t;
}

// The d (shift 0) or m (shift 16) halves of 4 rows' scale words, as floats.
fn q4_halves(dm: vec4<u32>, shift: u32) -> vec4<f32> {
    let h = (dm >> vec4<u32>(shift)) & vec4<u32>(0xffffu);
    return vec4<f32>(unpack2x16float(h.x).x, unpack2x16float(h.y).x, unpack2x16float(h.z).x, unpack2x16float(h.w).x);
}
