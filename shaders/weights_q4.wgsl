// Weight rows quantized to 4 bits in groups of 32 values, each with an f16 scale d and minimum m
// (src/quant.rs: a value is d * q + m), stored in superblocks of 4 groups: a vec4<u32> whose word j
// holds group j's d (low half) and m (high half), then each group's 32 quants as one vec4<u32>
// (octet k of the group in word k, value i of the octet in nibble i). Rows are whole superblocks
// (128 values), in groups of 8 rows whose superblocks interleave, their scales side by side
// (lib/row_groups.wgsl). No shader-f16: the quants are unpacked with integer shifts.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

// Octets per block: the decode products step through rows a group (one 16-byte load) at a time.
const BLOCK_OCTETS: u32 = 4u;
const BLOCK_QUADS: u32 = 8u;
const SUPERBLOCK_GROUPS: u32 = 4u;
const SUPERBLOCK_QUADS: u32 = 5u;
// Rows whose superblocks interleave (lib/row_groups.wgsl): one q4 row of a 150M model is 480 bytes.
const ROW_GROUP: u32 = 8u;

// Nibbles 0..4 and 4..8 of a word.
fn q4_low(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
}

fn q4_high(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
}

// Octet o of the row at `start` (see row_start) as two quads.
fn wo(start: u32, o: u32) -> mat2x4<f32> {
    let g = o / 4u;
    let sb = superblock_at(start, g);
    let dm = unpack2x16float(scale_word(sb, g % 4u));
    let word = w[sb + g % 4u][o % 4u];
    return mat2x4<f32>(q4_low(word) * dm.x + dm.y, q4_high(word) * dm.x + dm.y);
}

// A group's 32 quants (one quad) · the activations of its values: Σ q a.
fn q4_dot(q: vec4<u32>, a: array<vec4<f32>, 8>) -> f32 {
    let s = q4_low(q.x) * a[0] + q4_high(q.x) * a[1] + q4_low(q.y) * a[2] + q4_high(q.y) * a[3]
        + q4_low(q.z) * a[4] + q4_high(q.z) * a[5] + q4_low(q.w) * a[6] + q4_high(q.w) * a[7];
    return s.x + s.y + s.z + s.w;
}

// Σ a over a group's activations.
fn q4_input_sum(a: array<vec4<f32>, 8>) -> f32 {
    let t = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
    return t.x + t.y + t.z + t.w;
}

// Group b of the row at `start` · the activations of its 32 values: d · Σ q a + m · Σ a.
fn wb_dot(start: u32, b: u32, a: array<vec4<f32>, 8>) -> f32 {
    let sb = superblock_at(start, b);
    let dm = unpack2x16float(scale_word(sb, b % 4u));
    return dm.x * q4_dot(w[sb + b % 4u], a) + dm.y * q4_input_sum(a);
}
