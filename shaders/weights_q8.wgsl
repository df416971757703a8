// Weight rows quantized to int8 in groups of 32 values, each with an f16 scale d (src/quant.rs: a
// value is d * q), stored in superblocks of 8 groups: a vec4<u32> of the groups' scales (group j's in
// half j % 2 of word j / 2; lib/row_groups.wgsl says where it is), then each group's 32 quants as two
// vec4<u32> (octet k of the group in the words 2k and 2k + 1 of that pair, value i of a word in byte
// i). Rows are whole superblocks (256 values), so a row's groups never share a superblock with
// another row's. No shader-f16: the quants are unpacked with integer shifts.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

// Octets per block: the decode products step through rows a group at a time.
const BLOCK_OCTETS: u32 = 4u;
const BLOCK_QUADS: u32 = 8u;
const SUPERBLOCK_GROUPS: u32 = 8u;
const SUPERBLOCK_QUADS: u32 = 17u;
// Rows one after another (lib/row_groups.wgsl): interleaved in groups of 8, lavapipe's q8 products
// ran 10-20 % slower (docs/performance.md).
const ROW_GROUP: u32 = 1u;

// The four signed bytes of a word, in order.
fn q8_quad(word: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Octet o of the row at `start` (see row_start) as two quads.
fn wo(start: u32, o: u32) -> mat2x4<f32> {
    let g = o / 4u;
    let sb = superblock_at(start, g);
    let d = unpack2x16float(scale_word(sb, g % 8u / 2u))[g % 2u];
    let v = w[sb + 2u * (g % 8u) + o % 4u / 2u];
    let pair = select(v.xy, v.zw, o % 2u == 1u);
    return mat2x4<f32>(q8_quad(pair.x) * d, q8_quad(pair.y) * d);
}

// Group b of the row at `start` · the activations of its 32 values: d · Σ q a.
fn wb_dot(start: u32, b: u32, a: array<vec4<f32>, 8>) -> f32 {
    let sb = superblock_at(start, b);
    let d = unpack2x16float(scale_word(sb, b % 8u / 2u))[b % 2u];
    let lo = w[sb + 2u * (b % 8u)];
    let hi = w[sb + 1u + 2u * (b % 8u)];
    let s = q8_quad(lo.x) * a[0] + q8_quad(lo.y) * a[1] + q8_quad(lo.z) * a[2] + q8_quad(lo.w) * a[3]
        + q8_quad(hi.x) * a[4] + q8_quad(hi.y) * a[5] + q8_quad(hi.z) * a[6] + q8_quad(hi.w) * a[7];
    return d * (s.x + s.y + s.z + s.w);
}
