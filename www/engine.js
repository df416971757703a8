// Loads TokenFormer models into the wasm engine wherever there is `fetch`: a Web Worker (worker.js
// runs this for TokenFormerClient), a page's main thread, or another bundler-built app. Model files
// come from a folder or file URL, three URLs, local `File`s, or bytes. The weights stream: each
// chunk of a download (or of a file read front to back) goes straight into the engine's loader,
// which decodes it into the backend's storage, so neither JavaScript nor wasm ever holds the whole
// file. Progress is reported as { phase: 'download' | 'read', file, loaded, total }.
import init, { Engine } from '../pkg/tokenformer.js';
import * as Cache from './cache.js';

export { Engine };
export { list as cachedModels, remove as removeCachedModel, estimate as storageEstimate } from './cache.js';

/** The built-in model's three files, next to this module (bundlers copy them as assets). */
export const DEFAULT_MODEL = Object.freeze({
  kind: 'urls',
  config: new URL('../models/tokenformer-moby/config.json', import.meta.url).href,
  tokenizer: new URL('../models/tokenformer-moby/tokenizer.json', import.meta.url).href,
  weights: new URL('../models/tokenformer-moby/model.safetensors', import.meta.url).href,
});

let ready = null;

/** Instantiates the wasm module once: by default the .wasm next to pkg/tokenformer.js; `wasm` may
 *  be its URL (string, URL, Request) or its bytes / a compiled WebAssembly.Module. */
export function initWasm(wasm) {
  ready ??= init(wasm === undefined ? undefined : { module_or_path: wasm });
  return ready;
}

function concat(chunks, length) {
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

/** Appends a stream's chunks to `chunks`, calling `onChunk(bytes)` after each; resolves to the
 *  number of bytes read. */
async function pump(stream, chunks, onChunk) {
  const reader = stream.getReader();
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return read;
    chunks.push(value);
    read += value.length;
    onChunk(value.length);
  }
}

/** Reads a file stream into one array, reporting progress. */
async function readAll(stream, total, report) {
  const chunks = [];
  let loaded = 0;
  report(loaded, total);
  await pump(stream, chunks, (n) => report((loaded += n), total));
  return concat(chunks, loaded);
}

/** The bytes of a `data:` URL (bundlers inline small assets as such), decoded here rather than
 *  fetched: a strict CSP's `connect-src` need not allow `data:`. */
function dataUrlBytes(url) {
  const comma = url.indexOf(',');
  const body = url.slice(comma + 1);
  if (url.slice(0, comma).endsWith(';base64')) return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(decodeURIComponent(body));
}

/** Attempts per file; a network failure resumes where the bytes stopped (HTTP Range). */
const ATTEMPTS = 4;
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Streams `url` into `push(chunk)` as it arrives, reporting progress; resolves to the byte count.
 *  The body is read as soon as the response comes (a browser may drop received bytes of a
 *  connection that fails before they are read). A connection that fails
 *  mid-body is resumed from the byte where it stopped with a `Range` request (a server that ignores
 *  ranges sends the whole file again, and the bytes already taken are skipped), up to ATTEMPTS
 *  times with growing pauses; HTTP errors are not retried. `version.etag` gets the file's ETag. */
async function streamUrl(url, file, onProgress, push, version = {}) {
  let loaded = 0;
  let total = 0;
  let failure = null;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    if (attempt > 1) await pause(250 * 2 ** (attempt - 2));
    let res;
    try {
      res = await fetch(url, loaded > 0 ? { headers: { Range: `bytes=${loaded}-` } } : undefined);
    } catch (e) {
      failure = e;
      continue;
    }
    if (!res.ok) throw Object.assign(new Error(`${file}: ${url} answered HTTP ${res.status}`), { status: res.status });
    if (loaded === 0) {
      total = Number(res.headers.get('content-length')) || 0;
      version.etag = res.headers.get('etag');
    }
    // Bytes of this response already taken (the server ignored the range).
    let skip = loaded > 0 && res.status !== 206 ? loaded : 0;
    try {
      onProgress({ phase: 'download', file, loaded, total });
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        let chunk = value;
        if (skip > 0) {
          const n = Math.min(skip, chunk.length);
          skip -= n;
          chunk = chunk.subarray(n);
          if (!chunk.length) continue;
        }
        await push(chunk);
        loaded += chunk.length;
        onProgress({ phase: 'download', file, loaded, total });
      }
    } catch (e) {
      if (e?.name === 'LoadError') throw e.cause;
      failure = e;
      continue;
    }
    if (total && loaded !== total) {
      failure = new Error(`the connection closed at byte ${loaded} of ${total}`);
      continue;
    }
    return loaded;
  }
  const where = loaded ? ` at byte ${loaded}${total ? ` of ${total}` : ''}` : '';
  throw new Error(`${file}: cannot download ${url}${where} after ${ATTEMPTS} attempts (${failure?.message ?? 'network error'})`);
}

/** Downloads a small file (config, tokenizer) whole. */
async function download(url, file, onProgress) {
  if (url.startsWith('data:')) return dataUrlBytes(url);
  const chunks = [];
  const length = await streamUrl(url, file, onProgress, (c) => chunks.push(c));
  return concat(chunks, length);
}

const WEIGHT_NAMES = ['model.safetensors', 'pytorch_model.bin'];

/** The folder of a model URL and, when the URL names a weights file, that file's URL. */
function splitModelUrl(url) {
  const base = new URL(url, globalThis.location?.href);
  let weightsUrl = null;
  if (/\.(safetensors|bin)$/.test(base.pathname)) {
    weightsUrl = base.href;
  } else if (!base.pathname.endsWith('/')) {
    base.pathname += '/';
  }
  return { folder: new URL('.', base), weightsUrl };
}

/** The three files of a model folder URL (or of a weights file URL: its folder holds the others). */
async function fromUrl(url, onProgress) {
  const { config, tokenizer, weights } = await withWeightsSource({ kind: 'url', url }, onProgress);
  for (const candidate of weights.urls) {
    try {
      return { config, tokenizer, weights: await download(candidate, candidate.split('/').pop(), onProgress) };
    } catch (e) {
      if (e.status !== 404 || candidate === weights.urls.at(-1)) throw e;
    }
  }
  throw new Error('unreachable');
}

/** A local file read in pieces, on demand, so the weights never need to be in memory whole
 *  (FileReaderSync exists in workers only; on a page's main thread the file is read whole). */
async function fileReader(file) {
  if (typeof FileReaderSync !== 'function') return new Uint8Array(await file.arrayBuffer());
  return {
    size: file.size,
    read: (offset, length) => new Uint8Array(new FileReaderSync().readAsArrayBuffer(file.slice(offset, offset + length))),
  };
}

/** The config and tokenizer of a model source (as bytes) and where its weights are, unread:
 *  `{ urls }` (candidates, first that exists), `{ file }`, or `{ bytes }` (bytes or a reader). */
async function withWeightsSource(source, onProgress) {
  switch (source?.kind) {
    case 'url': {
      const { folder, weightsUrl } = splitModelUrl(source.url);
      const [config, tokenizer] = await Promise.all([
        download(new URL('config.json', folder).href, 'config.json', onProgress),
        download(new URL('tokenizer.json', folder).href, 'tokenizer.json', onProgress),
      ]);
      const urls = weightsUrl ? [weightsUrl] : WEIGHT_NAMES.map((n) => new URL(n, folder).href);
      return { config, tokenizer, weights: { urls, folder: folder.href } };
    }
    case 'urls': {
      const [config, tokenizer] = await Promise.all(['config', 'tokenizer']
        .map((part) => download(source[part], source[part].split('/').pop(), onProgress)));
      return { config, tokenizer, weights: { urls: [source.weights] } };
    }
    case 'files': {
      const files = [...source.files];
      const byName = (test) => files.find((f) => test(f.name));
      const config = byName((n) => n === 'config.json');
      const tokenizer = byName((n) => n === 'tokenizer.json');
      const weights = byName((n) => n.endsWith('.safetensors')) ?? byName((n) => n.endsWith('.bin'));
      const missing = [!config && 'config.json', !tokenizer && 'tokenizer.json', !weights && 'model.safetensors or pytorch_model.bin'].filter(Boolean);
      if (missing.length) {
        throw new Error(`the ${files.length} chosen file(s) lack ${missing.join(', ')}: a model needs config.json, tokenizer.json and its weights`);
      }
      const read = (f) => readAll(f.stream(), f.size, (loaded, total) => onProgress({ phase: 'read', file: f.name, loaded, total }));
      return { config: await read(config), tokenizer: await read(tokenizer), weights: { file: weights } };
    }
    case 'bytes': return { config: source.config, tokenizer: source.tokenizer, weights: { bytes: source.weights } };
    default: throw new Error(`unknown model source ${JSON.stringify(source?.kind)}: use 'url', 'urls', 'files' or 'bytes'`);
  }
}

/** The three files of a model source: `{ kind: 'url', url }` (a folder, or a weights file whose
 *  folder holds the others), `{ kind: 'urls', config, tokenizer, weights }`, `{ kind: 'files',
 *  files }` or `{ kind: 'bytes', config, tokenizer, weights }`. Reads the weights whole (or, for a
 *  local file in a worker, as a reader): `createEngine` streams them instead. */
export async function readModel(source, onProgress = () => {}) {
  if (source?.kind === 'url') return fromUrl(source.url, onProgress);
  const { config, tokenizer, weights } = await withWeightsSource(source, onProgress);
  if (weights.urls) return { config, tokenizer, weights: await download(weights.urls[0], weights.urls[0].split('/').pop(), onProgress) };
  if (weights.file) return { config, tokenizer, weights: await fileReader(weights.file) };
  return { config, tokenizer, weights: weights.bytes };
}

/** An error from the engine's loader, kept apart from network failures (which are retried). */
class LoadError extends Error {
  constructor(cause) {
    super(cause?.message, { cause });
    this.name = 'LoadError';
  }
}

const PIECE = 8 << 20;

/** Streams a weights source into `open(size)`'s loader chunk by chunk. */
async function streamWeights(weights, onProgress, open, after) {
  let loader = null;
  const begin = async (size) => { loader = await open(size); };
  const push = async (chunk) => {
    try {
      loader.push(chunk);
    } catch (e) {
      throw new LoadError(e);
    }
    await after?.(loader);
  };
  if (weights.urls) {
    // Opened first: the backend (and whether the model fits it) is known before any download.
    await begin(undefined);
    for (const url of weights.urls) {
      try {
        const version = {};
        await streamUrl(url, url.split('/').pop(), onProgress, push, version);
        return { loader, name: url.split('/').pop(), url, etag: version.etag };
      } catch (e) {
        // A folder may hold either weights file: the first that exists is the model's.
        if (e.status !== 404 || url === weights.urls.at(-1)) throw e;
      }
    }
    throw new Error(`${weights.folder} holds neither ${WEIGHT_NAMES.join(' nor ')}`);
  }
  if (weights.file) {
    const { file } = weights;
    const name = weights.name ?? file.name;
    await begin(file.size);
    let loaded = 0;
    onProgress({ phase: 'read', file: name, loaded, total: file.size });
    const reader = file.stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await push(value);
      onProgress({ phase: 'read', file: name, loaded: (loaded += value.length), total: file.size });
    }
    return { loader, name };
  }
  const { bytes } = weights;
  const size = bytes?.length ?? bytes?.size;
  if (!Number.isInteger(size)) throw new Error('weights: expected a Uint8Array or a { size, read(offset, length) } reader');
  await begin(size);
  for (let at = 0; at < size; at += PIECE) {
    const n = Math.min(PIECE, size - at);
    await push(bytes instanceof Uint8Array ? bytes.subarray(at, at + n) : bytes.read(at, n));
  }
  return { loader, name: 'weights' };
}

/** Streams `weights` into a new loader and finishes it into an engine. `opened(loader)` runs once
 *  the loader exists (it may refuse it), `after(loader)` after every chunk; `check(loader)` may
 *  refuse the bytes before the engine is built. On any error what the load allocated (GPU buffers,
 *  a half-built model) is released. */
async function loadStreamed(config, tokenizer, weights, load, onProgress, { opened, after, check } = {}) {
  let loader = null;
  try {
    const open = async (size) => {
      loader = await Engine.beginLoad(config, tokenizer, size, load);
      opened?.(loader);
      return loader;
    };
    const streamed = await streamWeights(weights, onProgress, open, after);
    const { position: size, checksum, dtype } = loader;
    const copy = { size: loader.copySize, checksum: loader.copyChecksum, dtype };
    check?.(loader);
    const finishing = loader;
    loader = null; // finish() takes it over, success or not
    return { engine: await finishing.finish(), size, checksum, copy, name: streamed.name, url: streamed.url, etag: streamed.etag };
  } catch (e) {
    loader?.free();
    throw e instanceof LoadError ? e.cause : e;
  }
}

/** The cache holds a copy in another dtype than this load asks for: a miss, not damage. */
class OtherDtype extends Error {}

/** Whether the file a cache entry was made from has changed on its server (another ETag or size). A
 *  server that cannot be reached (offline) or does not say leaves the entry good. */
async function outdated(meta) {
  if (!meta.sourceUrl) return false;
  try {
    const res = await fetch(meta.sourceUrl, { method: 'HEAD', signal: AbortSignal.timeout(5000) });
    if (!res.ok) return false;
    const etag = res.headers.get('etag');
    const size = Number(res.headers.get('content-length')) || null;
    return Boolean((etag && meta.etag && etag !== meta.etag) || (size && meta.sourceSize && size !== meta.sourceSize));
  } catch {
    return false;
  }
}

/** Loads a URL source from the cache when it holds a good, current copy in the dtype this load
 *  uses: null on a miss; a damaged copy is deleted (and said why in `notices`) so the caller
 *  downloads it again, and so is one whose source changed. */
async function loadCached(key, load, onProgress, notices) {
  const hit = await Cache.lookup(key);
  if (!hit) return null;
  if (await outdated(hit.meta)) {
    notices.push('the model changed on its server since it was cached, so it is downloaded again');
    return null;
  }
  try {
    const loaded = await loadStreamed(hit.config, hit.tokenizer, { file: hit.file, name: `${hit.meta.source} (cached)` }, load, onProgress, {
      opened: (loader) => {
        if (loader.dtype !== hit.meta.dtype) throw new OtherDtype();
      },
      check: (loader) => {
        if (loader.position !== hit.meta.size || loader.checksum !== hit.meta.checksum) {
          throw new Error(`${loader.position} bytes with CRC-32 ${loader.checksum.toString(16)}, but ${hit.meta.size} bytes with ${hit.meta.checksum.toString(16)} were saved`);
        }
      },
    });
    return { ...loaded, size: hit.meta.size, config: hit.config, tokenizer: hit.tokenizer };
  } catch (e) {
    if (e instanceof OtherDtype) return null;
    await Cache.remove(key);
    notices.push(`the cached copy was damaged (${e.message}) and is downloaded again`);
    return null;
  }
}

/** Loads a source from the network (or local files), writing a URL source's weights to the cache
 *  as they stream (a copy in the backend's dtype) when `key` is given; a full disk finishes the
 *  load uncached, with a notice. */
async function loadFresh(source, key, load, onProgress, notices) {
  const { config, tokenizer, weights } = await withWeightsSource(source, onProgress);
  const why = (e) => `not cached: ${e?.name === 'QuotaExceededError' ? 'the browser\'s storage quota is full' : e?.message}`;
  let entry = key ? await Cache.startEntry(key, config, tokenizer).catch((e) => { notices.push(why(e)); return null; }) : null;
  const uncached = async (e) => {
    notices.push(why(e));
    const failed = entry;
    entry = null;
    await failed?.abort();
  };
  // The copy's writes, joined while they are contiguous (most are) into blocks of up to 8 MiB:
  // each OPFS write is awaited, so a few large ones cost far less than many small ones.
  let block = null;
  const flush = async () => {
    if (!block || !entry) return;
    const { position, parts, length } = block;
    block = null;
    await entry.write(position, concat(parts, length));
  };
  const after = entry && (async (loader) => {
    const writes = loader.takeCopy();
    try {
      for (let i = 0; entry && i < writes.length; i += 2) {
        const [position, bytes] = [writes[i], writes[i + 1]];
        if (!block || position !== block.position + block.length) {
          await flush();
          block = { position, parts: [], length: 0 };
        }
        block.parts.push(bytes);
        block.length += bytes.length;
        if (block.length >= 8 << 20) await flush();
      }
    } catch (e) {
      await uncached(e);
    }
  });
  try {
    const loaded = await loadStreamed(config, tokenizer, weights, load, onProgress, {
      opened: (loader) => { if (entry) loader.keepCopy(); },
      after,
    });
    const { copy } = loaded;
    await flush().catch(uncached);
    await entry?.finish({
      source: loaded.name, sourceUrl: loaded.url, sourceSize: loaded.size, etag: loaded.etag,
      dtype: copy.dtype, size: copy.size, checksum: copy.checksum,
    }).catch(uncached);
    return { ...loaded, config, tokenizer, cached: Boolean(entry) };
  } catch (e) {
    await entry?.abort();
    throw e;
  }
}

/** The parameter-token counts of a grown model's first stage (the project's `growth` record in
 *  config.json), so the inspector can mark the slots growth added; null for other models. */
function growthOf(configBytes) {
  try {
    const first = JSON.parse(new TextDecoder().decode(configBytes)).growth?.[0];
    if (!first) return null;
    const { qkv_slot_num: qkv, proj_slot_num: proj, ffn_slot_num: ffn } = first;
    return [qkv, proj, ffn].every(Number.isInteger) ? { query: qkv, key: qkv, value: qkv, proj, ffn } : null;
  } catch {
    return null;
  }
}

/** What the browser says about its GPU adapter (wgpu cannot see the name on the web). */
async function adapterName() {
  try {
    const info = (await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }))?.info;
    return [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(' ') || 'WebGPU adapter';
  } catch {
    return 'WebGPU adapter';
  }
}

/**
 * Loads a model (the built-in one by default) and returns the engine with a description of it.
 * `options`: { backend?: 'auto' | 'webgpu' | 'cpu', dtype?: 'auto' | 'f32' | 'f16' | 'q8' | 'q4', wasm?: URL | bytes }.
 */
export async function createEngine(source = DEFAULT_MODEL, options = {}, onProgress = () => {}) {
  const { wasm: wasmSource, cache = true, ...load } = options ?? {};
  const wasm = await initWasm(wasmSource);
  // Models loaded by URL are kept between visits (OPFS); the next load of that URL needs no network.
  const key = cache && source?.kind === 'url' ? new URL(source.url, globalThis.location?.href).href : null;
  const notices = [];
  const fromCache = key ? await loadCached(key, load, onProgress, notices) : null;
  const loaded = fromCache ?? await loadFresh(source, key, load, onProgress, notices);
  const { engine, config, tokenizer } = loaded;
  const bytes = config.length + tokenizer.length + loaded.size;
  const info = {
    backend: engine.backend, adapter: engine.backend === 'webgpu' ? await adapterName() : null,
    notice: [engine.notice, ...notices].filter(Boolean).join('; ') || null, parameters: engine.parameters,
    // 'hit': loaded from the cache; 'saved': downloaded and cached; null: not cached.
    cache: fromCache ? 'hit' : loaded.cached ? 'saved' : null,
    vocabSize: engine.vocabSize, maxPositions: engine.maxPositions, bytes,
    layers: engine.layers, heads: engine.heads,
    slots: Object.fromEntries(['query', 'key', 'value', 'proj', 'ffn'].map((p) => [p, engine.slots(p)])),
    growth: growthOf(config),
    // wasm memory never shrinks: this is the peak of every load so far in this context.
    wasmMemory: wasm.memory.buffer.byteLength,
  };
  return { engine, info };
}
