// The next token, sampled on the device exactly as src/sampling.rs specifies: repetition penalty,
// greedy argmax (lowest id among ties; also when the largest logit is not finite), or: candidates
// in the order (logit descending, id ascending), top-k cut, p_i = exp((l_i - l_max) / T), top-p cut
// (shortest prefix whose mass reaches top_p), then the first kept id whose running mass exceeds
// uniform(seed, step) * kept mass, uniform() being the same pcg_hash counter draw.
//
// sampler_chunks.wgsl has applied the penalty, found each chunk's largest logit and, for top-k
// sampling on a GPU, listed each chunk's top_k ids; this one workgroup finishes without sorting: a cut or
// the draw is a "walk" over the candidates that finds the element of the order where a running
// weight (a count, or probability mass) first reaches a goal. It narrows a 32-bit order key 4 bits
// at a time (16 bins per pass, summed per thread in a fixed order and reduced as a tree, so results
// are deterministic), then resolves ties of equal logits by id the same way. WGSL has no f64:
// masses are f32 where the CPU sums in f64, so a draw that falls within ~1e-6 (relative) of a
// boundary between two tokens could pick the neighbour. The pick is added to the penalised ids,
// so a step submitted ahead on the device penalises it. lib/sampling.wgsl is prepended.

const WG: u32 = 128u;
const BINS: u32 = 16u;
var<workgroup> hist: array<f32, 2048>; // BINS * WG
var<workgroup> red_f: array<f32, 128>;
var<workgroup> red_u: array<u32, 128>;
var<workgroup> chosen_prefix: u32;
var<workgroup> chosen_before: f32;
var<workgroup> chosen_m: u32;

// The candidates: each chunk's list, or every id (u32::MAX marks a place past the vocabulary).
fn candidate_count() -> u32 {
    return select(p.vocab, p.chunks * p.per_chunk, p.per_chunk > 0u);
}

fn candidate(j: u32) -> u32 {
    if p.per_chunk > 0u {
        return candidates[j];
    }
    return j;
}

fn prob(i: u32, l_max: f32) -> f32 {
    return exp((logits[i] - l_max) / p.temperature);
}

// A set of candidates: every element up to and including (key, id) in the order.
fn in_set(key: u32, i: u32, lim: vec2<u32>) -> bool {
    return key < lim.x || (key == lim.x && i <= lim.y);
}

fn weight(i: u32, use_probs: bool) -> f32 {
    if use_probs {
        return probs[i];
    }
    return 1.0;
}

fn sum_f(v: f32, lid: u32) -> f32 {
    // Earlier readers of the reduction slots are done before they are overwritten.
    workgroupBarrier();
    red_f[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_f[lid] += red_f[lid + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_f[0]);
}

fn sum_u(v: u32, lid: u32) -> u32 {
    // Earlier readers of the reduction slots are done before they are overwritten.
    workgroupBarrier();
    red_u[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_u[lid] += red_u[lid + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_u[0]);
}

// Sums each thread's 16 bins over the workgroup; bin b's total ends in hist[b * WG].
fn reduce_bins(acc: array<f32, 16>, lid: u32) {
    for (var b = 0u; b < BINS; b++) {
        hist[b * WG + lid] = acc[b];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var b = 0u; b < BINS; b++) {
                hist[b * WG + lid] += hist[b * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
}

// Thread 0 picks the first bin where before + running weight reaches the goal (> when strict,
// >= otherwise), or the last non-empty bin if rounding leaves none; records the bin in
// chosen_prefix (shifted into place) and the weight before it in chosen_before.
fn pick_bin(lid: u32, prefix: u32, shift: u32, before: f32, goal: f32, strict: bool) {
    if lid == 0u {
        var acc = before;
        var chosen = BINS;
        var last = 0u;
        var before_last = before;
        for (var b = 0u; b < BINS; b++) {
            let w = hist[b * WG];
            if w > 0.0 {
                last = b;
                before_last = acc;
                if select(acc + w >= goal, acc + w > goal, strict) {
                    chosen = b;
                    break;
                }
            }
            acc += w;
        }
        if chosen == BINS {
            chosen = last;
            acc = before_last;
        }
        chosen_prefix = prefix | (chosen << shift);
        chosen_before = acc;
    }
}

// The element of `lim`'s set at which the running weight (in the sampler's order) first reaches
// `goal`. Returns it as a set limit (key, id): the element itself is the id.
fn walk(lid: u32, lim: vec2<u32>, use_probs: bool, goal: f32, strict: bool, l_max: f32) -> vec2<u32> {
    let n = candidate_count();
    // 1. The key, 4 bits per pass_i from the top.
    var prefix = 0u;
    var before = 0.0;
    for (var pass_i = 0u; pass_i < 8u; pass_i++) {
        let shift = 28u - 4u * pass_i;
        let fixed = select(0xFFFFFFFFu << (32u - 4u * pass_i), 0u, pass_i == 0u);
        var acc = array<f32, 16>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var j = lid; j < n; j += WG) {
            let i = candidate(j);
            if i >= p.vocab {
                continue;
            }
            let key = order_key(logits[i]);
            if (key & fixed) == prefix && in_set(key, i, lim) {
                acc[(key >> shift) & 15u] += weight(i, use_probs);
            }
        }
        reduce_bins(acc, lid);
        pick_bin(lid, prefix, shift, before, goal, strict);
        prefix = workgroupUniformLoad(&chosen_prefix);
        before = workgroupUniformLoad(&chosen_before);
    }
    // 2. How many elements share that key (equal logits), and how many of them, in id order, the
    //    running weight needs: the CPU adds them one at a time, tie_rank() counts them at once.
    var ties = 0u;
    for (var j = lid; j < n; j += WG) {
        let i = candidate(j);
        if i >= p.vocab {
            continue;
        }
        let key = order_key(logits[i]);
        if key == prefix && in_set(key, i, lim) {
            ties += 1u;
        }
    }
    ties = sum_u(ties, lid);
    if lid == 0u {
        chosen_m = tie_rank(ties, prefix, before, goal, strict, use_probs, l_max);
    }
    let m = workgroupUniformLoad(&chosen_m);
    // 3. The m-th smallest id among the ties, 4 bits per pass_i (counts are exact in f32).
    let id_bits = 32u - countLeadingZeros(max(p.vocab - 1u, 1u));
    let id_passes = (id_bits + 3u) / 4u;
    var id_prefix = 0u;
    var id_before = 0.0;
    for (var pass_i = 0u; pass_i < id_passes; pass_i++) {
        let shift = 4u * (id_passes - 1u - pass_i);
        let fixed = select(0xFFFFFFFFu << (shift + 4u), 0u, shift + 4u >= 32u);
        var acc = array<f32, 16>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var j = lid; j < n; j += WG) {
            let i = candidate(j);
            if i >= p.vocab {
                continue;
            }
            let key = order_key(logits[i]);
            if key == prefix && in_set(key, i, lim) && (i & fixed) == id_prefix {
                acc[(i >> shift) & 15u] += 1.0;
            }
        }
        reduce_bins(acc, lid);
        pick_bin(lid, id_prefix, shift, id_before, f32(m), false);
        id_prefix = workgroupUniformLoad(&chosen_prefix);
        id_before = workgroupUniformLoad(&chosen_before);
    }
    return vec2<u32>(prefix, id_prefix);
}

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) lid: u32) {
    let argmax = argmax_of_chunks(lid, WG);
    let l_max = bitcast<f32>(argmax.x);
    var pick = argmax.y;
    if samples_from(l_max) {
        pick = sample(lid, l_max);
    }
    if lid == 0u {
        choose(pick);
    }
}

fn sample(lid: u32, l_max: f32) -> u32 {
    let n = candidate_count();
    var lim = vec2<u32>(0xFFFFFFFFu, 0xFFFFFFFFu);
    if p.top_k > 0u && p.top_k < p.vocab {
        lim = walk(lid, lim, false, f32(p.top_k), false, l_max);
    }
    var z = 0.0;
    for (var j = lid; j < n; j += WG) {
        let i = candidate(j);
        if i < p.vocab && in_set(order_key(logits[i]), i, lim) {
            let w = prob(i, l_max);
            probs[i] = w;
            z += w;
        }
    }
    storageBarrier();
    z = sum_f(z, lid);
    if p.top_p < 1.0 {
        lim = walk(lid, lim, true, p.top_p * z, false, l_max);
    }
    var kept = 0.0;
    for (var j = lid; j < n; j += WG) {
        let i = candidate(j);
        if i < p.vocab && in_set(order_key(logits[i]), i, lim) {
            kept += probs[i];
        }
    }
    kept = sum_f(kept, lid);
    return walk(lid, lim, true, uniform_draw(p.seed, p.step) * kept, true, l_max).y;
}
