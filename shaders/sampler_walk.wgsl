// The sampler's walks over many workgroups: what sampler.wgsl does in one workgroup, for GPUs
// sampling with no top-k list to shrink the vocabulary (top_k 0, or at least CHUNK). One walk
// finds the element of the sampler's order (logit descending, id ascending) at which a running
// weight (a count for the top-k cut, probability mass for the top-p cut and the draw) first
// reaches a goal; sampler.wgsl explains the order and the walk. Here the order key is narrowed
// 8 bits a pass, each pass two dispatches: BINS, where the workgroup of each chunk of CHUNK ids
// sums its ids' weights and counts into 256 bins of the next digit; PICK, where one workgroup
// adds the chunks' bins in chunk order (so results are deterministic) and picks the bin. After
// the 4 key passes, ties of equal logits are resolved by id, 8 bits a pass, the same way.
// The dispatches of one sample, after sampler_chunks.wgsl (penalty, chunk maxima):
//   START; [top-k walk]; MASS, TOTAL; [top-p walk; MASS, TOTAL]; draw walk,
// whose last PICK writes the token (START writes it instead when the largest logit is not finite,
// and the walks then write nothing). The state between dispatches lives in `walk`.
// lib/sampling.wgsl is prepended.

const WG: u32 = 256u;
const BINS: u32 = 256u;
const NONE: u32 = 0xFFFFFFFFu;
const KEY_PASSES: u32 = 4u;

// p.stage
const STAGE_START: u32 = 0u;
const STAGE_MASS: u32 = 1u;
const STAGE_TOTAL: u32 = 2u;
const STAGE_BINS: u32 = 3u;
const STAGE_PICK: u32 = 4u;
// p.walk
const WALK_TOP_K: u32 = 0u;
const WALK_TOP_P: u32 = 1u;
const WALK_DRAW: u32 = 2u;

struct Walk {
    l_max: f32,
    // The set a walk runs over: every element up to and including (lim_key, lim_id) in the order;
    // each walk narrows it to its result.
    lim_key: u32,
    lim_id: u32,
    // The probability mass the top-p or draw walk reaches for.
    goal: f32,
    // The key digits chosen so far, and the weight of the set before them.
    prefix: u32,
    before: f32,
    // Which of the elements of key `prefix`, in id order, the weight reaches the goal at.
    rank: u32,
    // The id digits chosen so far, and how many ties come before them.
    id_prefix: u32,
    id_before: f32,
}

@group(0) @binding(6) var<storage, read_write> walk: Walk;
// Per chunk, 256 bins of (weight as f32 bits, count); MASS leaves its chunk's mass in bin 0.
@group(0) @binding(7) var<storage, read_write> partials: array<vec2<u32>>;

var<workgroup> digit: array<u32, 1024>; // CHUNK
var<workgroup> weights: array<f32, 1024>;
var<workgroup> bin_mass: array<f32, 256>;
var<workgroup> bin_count: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    switch p.stage {
        case STAGE_START: {
            start(lid);
        }
        case STAGE_MASS: {
            chunk_mass(wg.x, lid);
        }
        case STAGE_TOTAL: {
            total(lid);
        }
        case STAGE_BINS: {
            bins(wg.x, lid);
        }
        case STAGE_PICK, default: {
            pick(lid);
        }
    }
}

fn in_walk_set(key: u32, i: u32) -> bool {
    return key < walk.lim_key || (key == walk.lim_key && i <= walk.lim_id);
}

// Bits above a digit at `shift`.
fn above(shift: u32) -> u32 {
    return select(0xFFFFFFFFu << (shift + 8u), 0u, shift + 8u >= 32u);
}

fn id_passes() -> u32 {
    let id_bits = 32u - countLeadingZeros(max(p.vocab - 1u, 1u));
    return (id_bits + 7u) / 8u;
}

// The shift of pass `pass_index`'s digit: key digits from the top, then id digits.
fn pass_shift() -> u32 {
    if p.pass_index < KEY_PASSES {
        return 24u - 8u * p.pass_index;
    }
    return 8u * (id_passes() - 1u - (p.pass_index - KEY_PASSES));
}

// The largest logit, and the whole vocabulary as the set; the pick already when there is nothing
// to sample (the walks then run over nothing that matters).
fn start(lid: u32) {
    let argmax = argmax_of_chunks(lid, WG);
    if lid == 0u {
        walk.l_max = bitcast<f32>(argmax.x);
        if !samples_from(walk.l_max) {
            choose(argmax.y);
        }
        walk.lim_key = NONE;
        walk.lim_id = NONE;
    }
}

// Writes the probabilities of the chunk's ids in the set, and their sum into the chunk's bin 0.
fn chunk_mass(c: u32, lid: u32) {
    var z = 0.0;
    for (var i = c * CHUNK + lid; i < min((c + 1u) * CHUNK, p.vocab); i += WG) {
        if in_walk_set(order_key(logits[i]), i) {
            let w = exp((logits[i] - walk.l_max) / p.temperature);
            probs[i] = w;
            z += w;
        }
    }
    weights[lid] = z;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            weights[lid] += weights[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        partials[c * BINS] = vec2<u32>(bitcast<u32>(weights[0]), 0u);
    }
}

// The set's mass, in chunk order, times the walk's fraction of it: top_p, or the uniform draw.
fn total(lid: u32) {
    if lid == 0u {
        var z = 0.0;
        for (var c = 0u; c < p.chunks; c++) {
            z += bitcast<f32>(partials[c * BINS].x);
        }
        walk.goal = z * select(uniform_draw(p.seed, p.step), p.top_p, p.walk == WALK_TOP_P);
    }
}

// The chunk's elements with the walk's digits so far, in id order: each thread takes 4 adjacent
// ids and a scan of the threads' counts places them. Then each thread owns one bin and sums, in id
// order, the elements whose next digit is its bin; after the first pass few elements remain.
fn bins(c: u32, lid: u32) {
    let shift = pass_shift();
    let key_pass = p.pass_index < KEY_PASSES;
    let prefix = select(walk.prefix, 0u, p.pass_index == 0u);
    let id_prefix = select(walk.id_prefix, 0u, p.pass_index == KEY_PASSES);
    var found_digits: array<u32, 4>;
    var found_weights: array<f32, 4>;
    var found = 0u;
    for (var k = 0u; k < CHUNK / WG; k++) {
        let i = c * CHUNK + (CHUNK / WG) * lid + k;
        if i < p.vocab {
            let key = order_key(logits[i]);
            if in_walk_set(key, i) {
                if key_pass && (key & above(shift)) == prefix {
                    found_digits[found] = (key >> shift) & 255u;
                    found_weights[found] = select(1.0, probs[i], p.walk != WALK_TOP_K);
                    found += 1u;
                } else if !key_pass && key == walk.prefix && (i & above(shift)) == id_prefix {
                    found_digits[found] = (i >> shift) & 255u;
                    found_weights[found] = 1.0;
                    found += 1u;
                }
            }
        }
    }
    // Inclusive scan of the counts.
    bin_count[lid] = found;
    workgroupBarrier();
    for (var s = 1u; s < WG; s <<= 1u) {
        var left = 0u;
        if lid >= s {
            left = bin_count[lid - s];
        }
        workgroupBarrier();
        bin_count[lid] += left;
        workgroupBarrier();
    }
    let first = bin_count[lid] - found;
    for (var k = 0u; k < found; k++) {
        digit[first + k] = found_digits[k];
        weights[first + k] = found_weights[k];
    }
    let elements = workgroupUniformLoad(&bin_count[WG - 1u]);
    var mass = 0.0;
    var count = 0u;
    for (var j = 0u; j < elements; j++) {
        if digit[j] == lid {
            mass += weights[j];
            count += 1u;
        }
    }
    partials[c * BINS + lid] = vec2<u32>(bitcast<u32>(mass), count);
}

// The first bin where before + the running weight reaches the goal (> when strict), or the last
// non-empty bin if rounding leaves none; with the weight before it.
fn first_bin(before: f32, goal: f32, strict: bool) -> vec2<f32> {
    var acc = before;
    var last = 0u;
    var before_last = before;
    for (var b = 0u; b < BINS; b++) {
        let w = bin_mass[b];
        if w > 0.0 {
            last = b;
            before_last = acc;
            if select(acc + w >= goal, acc + w > goal, strict) {
                return vec2<f32>(f32(b), acc);
            }
        }
        acc += w;
    }
    return vec2<f32>(f32(last), before_last);
}

fn pick(lid: u32) {
    var mass = 0.0;
    var count = 0u;
    for (var c = 0u; c < p.chunks; c++) {
        let bin = partials[c * BINS + lid];
        mass += bitcast<f32>(bin.x);
        count += bin.y;
    }
    bin_mass[lid] = mass;
    bin_count[lid] = count;
    workgroupBarrier();
    if lid != 0u {
        return;
    }
    let shift = pass_shift();
    if p.pass_index < KEY_PASSES {
        let goal = select(walk.goal, f32(p.top_k), p.walk == WALK_TOP_K);
        let strict = p.walk == WALK_DRAW;
        let first = p.pass_index == 0u;
        let chosen = first_bin(select(walk.before, 0.0, first), goal, strict);
        let prefix = select(walk.prefix, 0u, first) | (u32(chosen.x) << shift);
        walk.prefix = prefix;
        walk.before = chosen.y;
        if p.pass_index == KEY_PASSES - 1u {
            let ties = bin_count[u32(chosen.x)];
            walk.rank = tie_rank(ties, prefix, chosen.y, goal, strict, p.walk != WALK_TOP_K, walk.l_max);
        }
        return;
    }
    let first = p.pass_index == KEY_PASSES;
    let chosen = first_bin(select(walk.id_before, 0.0, first), f32(walk.rank), false);
    let id = select(walk.id_prefix, 0u, first) | (u32(chosen.x) << shift);
    walk.id_prefix = id;
    walk.id_before = chosen.y;
    if shift == 0u {
        walk.lim_key = walk.prefix;
        walk.lim_id = id;
        if p.walk == WALK_DRAW && samples_from(walk.l_max) {
            choose(id);
        }
    }
}
