// The workgroup shape of the decode products (scores.wgsl, values.wgsl): WG threads (prepended by
// the Rust side), `rows` weight rows per workgroup in groups of 8, each group's `tpr` threads
// reading neighbouring blocks of its rows (thread lid = group * tpr + lane; a block is the dtype
// prelude's BLOCK_OCTETS octets: one octet of floats, one group of 32 quantized values): one block
// of the input, loaded from workgroup memory (lib/block_input*.wgsl), serves 8 rows (the dtype's
// dot_8_rows(), most of them through dot_rows_each() here). Then a reduction over each group's
// lanes: reduce_rows(), from lib/reduce_workgroup.wgsl or, where the adapter has subgroups,
// lib/reduce_subgroup.wgsl (also prepended).
// On a GPU: 256 threads, 8 to 64 rows (tpr 256 to 32). On a CPU adapter: 16 threads and 128 rows,
// so tpr = 1: each thread walks 8 whole rows, with no sums across lanes and few threads to
// switch between at barriers (software Vulkan runs 8 lanes at a time and the workgroups one after
// another).
// Also the statistics a Pattention's normalisation needs, combined across rows and workgroups.

var<workgroup> red: array<vec4<f32>, WG>;
var<workgroup> stat_red: array<vec2<f32>, WG>;
// Row i's total (rows up to 256), left by reduce_8_rows().
var<workgroup> row_total: array<f32, 256>;

// Where the 8 rows from j0 (a multiple of 8) of a matrix of n rows (k_octets octets each) starting
// at row `first` start (the prelude's row_start). A thread past the last rows reads the last 8 again
// rather than skip its loop, so that all of a subgroup's lanes take part in block_input()'s
// shuffles, and rows past n repeat the last one, so loads stay in bounds (their sums are not
// stored).
fn row_starts(first: u32, j0: u32, n: u32, k_octets: u32) -> array<u32, 8> {
    let j = min(j0, (n - 1u) / 8u * 8u);
    var r: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = row_start(first + min(j + i, n - 1u), k_octets);
    }
    return r;
}

// Adds block b of the 8 rows starting at r, times the input block a, to lo (rows 0..4) and hi
// (rows 4..8), a row at a time: dot_8_rows() for most dtypes (lib/rows_each.wgsl).
fn dot_rows_each(
    r: array<u32, 8>,
    b: u32,
    a: array<vec4<f32>, BLOCK_QUADS>,
    lo: ptr<function, vec4<f32>>,
    hi: ptr<function, vec4<f32>>,
) {
    *lo += vec4<f32>(wb_dot(r[0], b, a), wb_dot(r[1], b, a), wb_dot(r[2], b, a), wb_dot(r[3], b, a));
    *hi += vec4<f32>(wb_dot(r[4], b, a), wb_dot(r[5], b, a), wb_dot(r[6], b, a), wb_dot(r[7], b, a));
}

// Reduces the sums of every group's 8 rows (lo: rows 0..4, hi: rows 4..8) and leaves the total of
// the workgroup's row i in row_total[i], i < rows, written by thread i % WG: the thread that reads
// it after (for i = lid; i < rows; i += WG), so no barrier is needed before that read.
fn reduce_8_rows(lo: vec4<f32>, hi: vec4<f32>, lid: u32, tpr: u32, rows: u32) {
    reduce_rows(lo, lid, tpr);
    for (var i = lid; i < rows; i += WG) {
        if i % 8u < 4u {
            row_total[i] = red[i / 8u * tpr][i % 8u];
        }
    }
    workgroupBarrier();
    reduce_rows(hi, lid, tpr);
    for (var i = lid; i < rows; i += WG) {
        if i % 8u >= 4u {
            row_total[i] = red[i / 8u * tpr][i % 8u - 4u];
        }
    }
}

// The sum over the whole workgroup, returned to every thread.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    reduce_rows(vec4<f32>(v, 0.0, 0.0, 0.0), lid, WG);
    let total = red[0].x;
    workgroupBarrier();
    return total;
}

// Statistics: (Σ of squares, unused) for the L2 norms, (max, Σ exp(s - max)) for softmax.
fn stat_identity(softmax: bool) -> vec2<f32> {
    return select(vec2<f32>(0.0), vec2<f32>(-3.0e38, 0.0), softmax);
}

fn stat_combine(a: vec2<f32>, b: vec2<f32>, softmax: bool) -> vec2<f32> {
    if !softmax {
        return a + b;
    }
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Combines the first `len` (a power of two) entries of stat_red, 16 at a time as reduce_rows does;
// the result is in stat_red[0].
fn reduce_stats(lid: u32, len: u32, softmax: bool) {
    workgroupBarrier();
    for (var s = len; s > 1u; s /= 16u) {
        let stride = max(s / 16u, 1u);
        if lid < stride {
            var st = stat_red[lid];
            for (var m = 1u; m < s / stride; m++) {
                st = stat_combine(st, stat_red[lid + m * stride], softmax);
            }
            stat_red[lid] = st;
        }
        workgroupBarrier();
    }
}
