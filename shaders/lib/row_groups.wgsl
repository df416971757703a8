// Appended to the quantized dtype preludes (weights_q8.wgsl, weights_q4.wgsl), which define
// SUPERBLOCK_GROUPS and SUPERBLOCK_QUADS. Their rows are stored in groups of 8 whose superblocks
// interleave: superblock s of the group's 8 rows side by side, then superblock s + 1, and so on
// (src/gpu/weights.rs writes them so; a last group past the matrix's rows is padding). A decode
// product's thread walks 8 neighbouring rows together (lib/rows.wgsl): it then reads one stream
// of memory rather than 8 short rows, which a CPU adapter's hardware prefetcher follows
// (docs/performance.md).

// Index of the first quad of the superblock holding group g of row `row`, in a matrix of
// `row_groups` groups per row (whole superblocks).
fn superblock_at(row: u32, g: u32, row_groups: u32) -> u32 {
    let s = g / SUPERBLOCK_GROUPS;
    return ((row / 8u * (row_groups / SUPERBLOCK_GROUPS) + s) * 8u + row % 8u) * SUPERBLOCK_QUADS;
}
