// Appended to the quantized dtype preludes (weights_q8.wgsl, weights_q4.wgsl), which define
// SUPERBLOCK_GROUPS, SUPERBLOCK_QUADS and ROW_GROUP. Their rows are stored in groups of ROW_GROUP
// whose superblocks interleave: superblock s of the group's rows side by side, then superblock
// s + 1, and so on (src/gpu/weights.rs writes them so; a last group past the matrix's rows is
// padding). A decode product's thread walks 8 neighbouring rows together (lib/rows.wgsl): with
// groups of 8 it reads one stream of memory rather than 8 short rows, which a CPU adapter's
// hardware prefetcher follows (docs/performance.md). ROW_GROUP 1 is rows one after another.

// Where row `row` of a matrix of k_octets octets per row (whole superblocks) starts: the first quad
// of its first superblock, for wo() and wb_dot().
fn row_start(row: u32, k_octets: u32) -> u32 {
    let row_superblocks = k_octets / (4u * SUPERBLOCK_GROUPS);
    return (row / ROW_GROUP * row_superblocks * ROW_GROUP + row % ROW_GROUP) * SUPERBLOCK_QUADS;
}

// The first quad of the superblock holding group g of the row at `start`.
fn superblock_at(start: u32, g: u32) -> u32 {
    return start + g / SUPERBLOCK_GROUPS * (ROW_GROUP * SUPERBLOCK_QUADS);
}
