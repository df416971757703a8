//! Work split across cores. Natively the pieces run on rayon's pool (its size is the CLI's
//! `--threads`); in wasm32 a tab has one thread, so they run in order. Every split is over
//! independent outputs, never over a sum, so results are bit-identical whatever the thread count.

/// Runs `work(index, item)` for every item, in parallel where there are threads.
#[cfg(not(target_arch = "wasm32"))]
pub fn for_each<T: Send>(items: Vec<T>, work: impl Fn(usize, T) + Sync + Send) {
    use rayon::prelude::*;
    items.into_par_iter().enumerate().for_each(|(i, item)| work(i, item));
}

#[cfg(target_arch = "wasm32")]
pub fn for_each<T>(items: Vec<T>, work: impl Fn(usize, T)) {
    items.into_iter().enumerate().for_each(|(i, item)| work(i, item));
}

/// Runs `work` on a thread of the pool (natively): a token's many short splits are then joined
/// by a worker that takes a piece itself while the others still spin, instead of each one waking
/// sleeping threads from outside the pool and blocking until they finish.
#[cfg(not(target_arch = "wasm32"))]
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

#[cfg(target_arch = "wasm32")]
pub fn on_pool<R>(work: impl FnOnce() -> R) -> R {
    work()
}

/// `work(i)` for i in 0..count, in parallel where there are threads; the results in order.
#[cfg(not(target_arch = "wasm32"))]
pub fn map<R: Send>(count: usize, work: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    (0..count).into_par_iter().map(work).collect()
}

#[cfg(target_arch = "wasm32")]
pub fn map<R>(count: usize, work: impl Fn(usize) -> R) -> Vec<R> {
    (0..count).map(work).collect()
}

/// The threads work is split over.
pub fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    return 1;
}

/// How many of `n` outputs one piece of work gets: `per_thread` pieces per thread (more let a
/// fast core take over a slow one's share; fewer keep each piece's memory runs long), a multiple of
/// `align`, and at least `min`, so small products stay whole.
pub fn chunk_len(n: usize, per_thread: usize, align: usize, min: usize) -> usize {
    let len = n.div_ceil(threads() * per_thread).next_multiple_of(align).max(min);
    len.min(n.max(1))
}
