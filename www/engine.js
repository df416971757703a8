// Loads TokenFormer models into the wasm engine wherever there is `fetch`: a Web Worker (worker.js
// runs this for TokenFormerClient), a page's main thread, or another bundler-built app. Model files
// come from a folder or file URL, three URLs, local `File`s, or bytes; progress is reported as
// { phase: 'download' | 'read' | 'decode', file, loaded, total }.
import init, { Engine } from '../pkg/tokenformer.js';

export { Engine };

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

/** Downloads `url` whole, reporting progress. A connection that fails mid-body is retried from the
 *  byte where it stopped with a `Range` request (from the start if the server ignores ranges),
 *  up to ATTEMPTS times with growing pauses; HTTP errors are not retried. */
async function download(url, file, onProgress) {
  if (url.startsWith('data:')) return dataUrlBytes(url);
  const chunks = [];
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
    if (loaded > 0 && res.status !== 206) {
      // The server sent the whole file again: start over.
      chunks.length = 0;
      loaded = 0;
    }
    if (loaded === 0) total = Number(res.headers.get('content-length')) || 0;
    try {
      onProgress({ phase: 'download', file, loaded, total });
      await pump(res.body, chunks, (n) => onProgress({ phase: 'download', file, loaded: (loaded += n), total }));
    } catch (e) {
      failure = e;
      continue;
    }
    if (total && loaded !== total) {
      failure = new Error(`the connection closed at byte ${loaded} of ${total}`);
      continue;
    }
    return concat(chunks, loaded);
  }
  const where = loaded ? ` at byte ${loaded}${total ? ` of ${total}` : ''}` : '';
  throw new Error(`${file}: cannot download ${url}${where} after ${ATTEMPTS} attempts (${failure?.message ?? 'network error'})`);
}

const WEIGHT_NAMES = ['model.safetensors', 'pytorch_model.bin'];

/** The three files of a model folder URL (or of a weights file URL: its folder holds the others). */
async function fromUrl(url, onProgress) {
  const base = new URL(url, globalThis.location?.href);
  let weightsUrl = null;
  if (/\.(safetensors|bin)$/.test(base.pathname)) {
    weightsUrl = base.href;
  } else if (!base.pathname.endsWith('/')) {
    base.pathname += '/';
  }
  const folder = new URL('.', base);
  const [config, tokenizer] = await Promise.all([
    download(new URL('config.json', folder).href, 'config.json', onProgress),
    download(new URL('tokenizer.json', folder).href, 'tokenizer.json', onProgress),
  ]);
  if (weightsUrl) return { config, tokenizer, weights: await download(weightsUrl, weightsUrl.split('/').pop(), onProgress) };
  for (const name of WEIGHT_NAMES) {
    try {
      return { config, tokenizer, weights: await download(new URL(name, folder).href, name, onProgress) };
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  throw new Error(`${folder.href} holds neither ${WEIGHT_NAMES.join(' nor ')}`);
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

/** The three files among local `File`s (a picked or dropped folder may hold more). */
async function fromFiles(files, onProgress) {
  const byName = (test) => files.find((f) => test(f.name));
  const config = byName((n) => n === 'config.json');
  const tokenizer = byName((n) => n === 'tokenizer.json');
  const weights = byName((n) => n.endsWith('.safetensors')) ?? byName((n) => n.endsWith('.bin'));
  const missing = [!config && 'config.json', !tokenizer && 'tokenizer.json', !weights && 'model.safetensors or pytorch_model.bin'].filter(Boolean);
  if (missing.length) {
    throw new Error(`the ${files.length} chosen file(s) lack ${missing.join(', ')}: a model needs config.json, tokenizer.json and its weights`);
  }
  const read = (f) => readAll(f.stream(), f.size, (loaded, total) => onProgress({ phase: 'read', file: f.name, loaded, total }));
  return { config: await read(config), tokenizer: await read(tokenizer), weights: await fileReader(weights) };
}

/** The three files of a model source: `{ kind: 'url', url }` (a folder, or a weights file whose
 *  folder holds the others), `{ kind: 'urls', config, tokenizer, weights }`, `{ kind: 'files',
 *  files }` or `{ kind: 'bytes', config, tokenizer, weights }`. */
export async function readModel(source, onProgress = () => {}) {
  switch (source?.kind) {
    case 'url': return fromUrl(source.url, onProgress);
    case 'files': return fromFiles([...source.files], onProgress);
    case 'bytes': return { config: source.config, tokenizer: source.tokenizer, weights: source.weights };
    case 'urls': {
      const [config, tokenizer, weights] = await Promise.all(['config', 'tokenizer', 'weights']
        .map((part) => download(source[part], source[part].split('/').pop(), onProgress)));
      return { config, tokenizer, weights };
    }
    default: throw new Error(`unknown model source ${JSON.stringify(source?.kind)}: use 'url', 'urls', 'files' or 'bytes'`);
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
 * `options`: { backend?: 'auto' | 'webgpu' | 'cpu', dtype?: 'f32' | 'f16', wasm?: URL | bytes }.
 */
export async function createEngine(source = DEFAULT_MODEL, options = {}, onProgress = () => {}) {
  const { wasm: wasmSource, ...load } = options ?? {};
  const wasm = await initWasm(wasmSource);
  const files = await readModel(source, onProgress);
  const bytes = files.config.length + files.tokenizer.length + (files.weights.length ?? files.weights.size);
  const engine = await Engine.load(files.config, files.weights, files.tokenizer, load, (loaded, total) =>
    onProgress({ phase: 'decode', file: 'weights', loaded, total }));
  const info = {
    backend: engine.backend, adapter: engine.backend === 'webgpu' ? await adapterName() : null,
    notice: engine.notice, parameters: engine.parameters,
    vocabSize: engine.vocabSize, maxPositions: engine.maxPositions, bytes,
    layers: engine.layers, heads: engine.heads,
    slots: Object.fromEntries(['query', 'key', 'value', 'proj', 'ffn'].map((p) => [p, engine.slots(p)])),
    growth: growthOf(files.config),
    // wasm memory never shrinks: this is the peak of every load so far in this context.
    wasmMemory: wasm.memory.buffer.byteLength,
  };
  return { engine, info };
}
