// Appended to the quantized dtype preludes (weights_q8.wgsl, weights_q4.wgsl), which define
// SUPERBLOCK_GROUPS, SUPERBLOCK_QUADS (a row's superblock: one quad of its groups' scales, then
// their quants) and ROW_GROUP. Rows are stored in groups of ROW_GROUP rows: superblock s of the
// group's rows together, their scale quads first, side by side (word w of row r's scales is word
// w * ROW_GROUP + r of them), then each row's quants in turn; then superblock s + 1, and so on
// (src/gpu/weights.rs writes them so; a last group past the matrix's rows is padding). A decode
// product's thread walks 8 neighbouring rows together (lib/rows.wgsl): with groups of 8 it reads
// one stream of memory rather than 8 short rows, which a CPU adapter's hardware prefetcher follows,
// and a block's 8 rows' scales in 2 loads (docs/performance.md). ROW_GROUP 1 is rows one after
// another.

const QUANT_QUADS: u32 = SUPERBLOCK_QUADS - 1u;
// Quads of a row group's superblock s.
const GROUP_SUPERBLOCK_QUADS: u32 = ROW_GROUP * SUPERBLOCK_QUADS;

// Where row `row` of a matrix of k_octets octets per row (whole superblocks) starts: the first
// quant quad of its first superblock, for wo() and wb_dot().
fn row_start(row: u32, k_octets: u32) -> u32 {
    let row_superblocks = k_octets / (4u * SUPERBLOCK_GROUPS);
    return row / ROW_GROUP * row_superblocks * GROUP_SUPERBLOCK_QUADS + ROW_GROUP + row % ROW_GROUP * QUANT_QUADS;
}

// The first quant quad of the superblock holding group g of the row at `start`.
fn superblock_at(start: u32, g: u32) -> u32 {
    return start + g / SUPERBLOCK_GROUPS * GROUP_SUPERBLOCK_QUADS;
}

// Word i of the scales of the row whose superblock's quants start at quad sb. A row group's
// superblocks start at multiples of GROUP_SUPERBLOCK_QUADS, which places the row in its group.
fn scale_word(sb: u32, i: u32) -> u32 {
    let r = select((sb % GROUP_SUPERBLOCK_QUADS - ROW_GROUP) / QUANT_QUADS, 0u, ROW_GROUP == 1u);
    let at = (sb - ROW_GROUP - r * QUANT_QUADS) * 4u + i * ROW_GROUP + r;
    return w[at / 4u][at % 4u];
}
