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
    let s_lo = q4_row_scales(dm_lo);
    let s_hi = q4_row_scales(dm_hi);
    *lo += s_lo[0] * x_lo + s_lo[1] * t;
    *hi += s_hi[0] * x_hi + s_hi[1] * t;
}

// 4 rows' scale words: their d (column 0) and m (column 1).
fn q4_row_scales(dm: vec4<u32>) -> mat2x4<f32> {
    let r0 = unpack2x16float(dm.x);
    let r1 = unpack2x16float(dm.y);
    let r2 = unpack2x16float(dm.z);
    let r3 = unpack2x16float(dm.w);
    return mat2x4<f32>(vec4<f32>(r0.x, r1.x, r2.x, r3.x), vec4<f32>(r0.y, r1.y, r2.y, r3.y));
}
