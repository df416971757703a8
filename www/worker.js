// The engine's Web Worker: loads models and generates, so the page never freezes. The message
// protocol is documented in client.js, which is the only code that talks to this file.
import init, { Engine } from '../pkg/tokenformer.js';

let engine = null;
let ready = null; // the wasm module's init promise (resolves to its exports)
let stopRequested = false;
// Engine calls run one at a time: an inspection asked for between two generated tokens waits for
// the step in flight instead of getting the engine's "busy" error.
let queue = Promise.resolve();
const exclusive = (fn) => {
  const run = queue.then(fn, fn);
  queue = run.catch(() => {});
  return run;
};

const post = (msg) => self.postMessage(msg);

// A macrotask between tokens: CPU steps resolve as microtasks, and without this a 'stop' message
// would wait for the whole generation.
const channel = new MessageChannel();
const pending = [];
channel.port1.onmessage = () => pending.shift()?.();
const yieldToEvents = () => new Promise((resolve) => { pending.push(resolve); channel.port2.postMessage(0); });

/** Reads a response or file stream into one array, reporting progress. */
async function readAll(stream, total, report) {
  const reader = stream.getReader();
  const chunks = [];
  let loaded = 0;
  report(loaded, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    report(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

async function download(url, file, req) {
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`${file}: cannot download ${url} (${e.message})`);
  }
  if (!res.ok) throw Object.assign(new Error(`${file}: ${url} answered HTTP ${res.status}`), { status: res.status });
  const total = Number(res.headers.get('content-length')) || 0;
  return readAll(res.body, total, (loaded, t) => post({ type: 'progress', req, phase: 'download', file, loaded, total: t }));
}

const WEIGHT_NAMES = ['model.safetensors', 'pytorch_model.bin'];

/** The three files of a model folder URL (or of a weights file URL: its folder holds the others). */
async function fromUrl(url, req) {
  const base = new URL(url, self.location.href);
  let weightsUrl = null;
  if (/\.(safetensors|bin)$/.test(base.pathname)) {
    weightsUrl = base.href;
  } else if (!base.pathname.endsWith('/')) {
    base.pathname += '/';
  }
  const folder = new URL('.', base);
  const [config, tokenizer] = await Promise.all([
    download(new URL('config.json', folder).href, 'config.json', req),
    download(new URL('tokenizer.json', folder).href, 'tokenizer.json', req),
  ]);
  if (weightsUrl) return { config, tokenizer, weights: await download(weightsUrl, weightsUrl.split('/').pop(), req) };
  for (const name of WEIGHT_NAMES) {
    try {
      return { config, tokenizer, weights: await download(new URL(name, folder).href, name, req) };
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  throw new Error(`${folder.href} holds neither ${WEIGHT_NAMES.join(' nor ')}`);
}

/** A local file read in pieces, on demand: the weights never need to be in memory whole. */
function fileReader(file) {
  return {
    size: file.size,
    read: (offset, length) => new Uint8Array(new FileReaderSync().readAsArrayBuffer(file.slice(offset, offset + length))),
  };
}

/** The three files among local `File`s (a picked or dropped folder may hold more). */
async function fromFiles(files, req) {
  const byName = (test) => files.find((f) => test(f.name));
  const config = byName((n) => n === 'config.json');
  const tokenizer = byName((n) => n === 'tokenizer.json');
  const weights = byName((n) => n.endsWith('.safetensors')) ?? byName((n) => n.endsWith('.bin'));
  const missing = [!config && 'config.json', !tokenizer && 'tokenizer.json', !weights && 'model.safetensors or pytorch_model.bin'].filter(Boolean);
  if (missing.length) {
    throw new Error(`the ${files.length} chosen file(s) lack ${missing.join(', ')}: a model needs config.json, tokenizer.json and its weights`);
  }
  const read = (f) => readAll(f.stream(), f.size, (loaded, total) => post({ type: 'progress', req, phase: 'read', file: f.name, loaded, total }));
  return { config: await read(config), tokenizer: await read(tokenizer), weights: fileReader(weights) };
}

async function load({ req, source, options }) {
  const wasm = await (ready ??= init());
  const files = source.kind === 'files' ? await fromFiles(source.files, req) : await fromUrl(source.url, req);
  const bytes = files.config.length + files.tokenizer.length + (files.weights.length ?? files.weights.size);
  const growth = growthOf(files.config);
  const next = await Engine.load(files.config, files.weights, files.tokenizer, options ?? {}, (loaded, total) =>
    post({ type: 'progress', req, phase: 'decode', file: 'weights', loaded, total }));
  // Only a model that loaded replaces the current one: a bad file leaves the page as it was.
  stopRequested = true;
  engine?.cancel();
  engine?.free();
  engine = next;
  return {
    backend: engine.backend, adapter: engine.backend === 'webgpu' ? await adapterName() : null,
    notice: engine.notice, parameters: engine.parameters,
    vocabSize: engine.vocabSize, maxPositions: engine.maxPositions, bytes,
    layers: engine.layers, heads: engine.heads,
    slots: Object.fromEntries(['query', 'key', 'value', 'proj', 'ffn'].map((p) => [p, engine.slots(p)])), growth,
    // wasm memory never shrinks: this is the peak of every load so far in this worker.
    wasmMemory: wasm.memory.buffer.byteLength,
  };
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

async function generate({ req, prompt, params }) {
  if (!engine) throw new Error('no model is loaded');
  const ids = engine.encode(prompt);
  engine.start(ids, params ?? {});
  stopRequested = false;
  const start = performance.now();
  let first = 0;
  let last = 0;
  const out = [];
  post({ type: 'started', req, promptTokens: ids.length });
  for (;;) {
    const token = await exclusive(() => engine.step());
    if (!token) break;
    last = performance.now();
    if (out.length === 0) first = last;
    out.push(token.id);
    post({ type: 'token', req, id: token.id, text: token.text });
    await yieldToEvents();
    if (stopRequested) engine.cancel();
  }
  return {
    ids: out, promptTokens: ids.length, stopReason: engine.stopReason ?? 'cancelled',
    timeToFirstTokenMs: out.length ? first - start : null,
    // Decode rate: tokens after the first, over the time after the first.
    tokensPerSecond: out.length > 1 ? (out.length - 1) / ((last - first) / 1000) : null,
  };
}

const loadedEngine = () => {
  if (!engine) throw new Error('no model is loaded');
  return engine;
};
/** Each id's own text, for labels. */
const texts = (ids) => [...ids].map((id) => engine.decode([id]));

// Inspection: `ids` undefined inspects the running generation's tokens and lets it go on.
const idsArg = (ids) => (ids ? Uint32Array.from(ids) : undefined);
const inspectors = {
  encode: async ({ text }) => [...loadedEngine().encode(text)],
  inspectSummary: ({ ids, k }) => exclusive(async () => {
    const s = await loadedEngine().inspectSummary(idsArg(ids), k);
    return { ...s, texts: texts(s.ids) };
  }),
  inspect: ({ ids, layer, proj }) => exclusive(async () => {
    const c = await loadedEngine().inspect(idsArg(ids), layer, proj);
    return { ...c, texts: texts(c.ids) };
  }),
  attention: ({ ids, layer }) => exclusive(async () => {
    const a = await loadedEngine().attention(idsArg(ids), layer);
    return { ...a, texts: texts(a.ids) };
  }),
  dictionary: ({ layer, proj, slot, k }) => exclusive(() => loadedEngine().dictionary(layer, proj, slot, k)),
  // What the inspector shows, in one turn of the queue so that every part covers the same tokens
  // even while a generation runs: the summary (when k > 0), and the open map with its layer's
  // attention.
  inspectView: ({ ids, k, open }) => exclusive(async () => {
    const e = loadedEngine();
    const view = {};
    if (k > 0) view.summary = { ...(await e.inspectSummary(idsArg(ids), k)) };
    if (open) Object.assign(view, await e.inspectBlock(idsArg(ids), open.layer, open.proj));
    const shown = view.summary?.ids ?? view.map?.ids ?? [];
    return { summary: view.summary, map: view.map, attention: view.attention, ids: [...shown], texts: texts(shown) };
  }),
};

self.onmessage = async ({ data }) => {
  if (data.type === 'stop') {
    stopRequested = true;
    engine?.cancel();
    return;
  }
  const run = data.type === 'load' ? load : data.type === 'generate' ? generate
    : Object.hasOwn(inspectors, data.type) ? inspectors[data.type] : null;
  if (!run) {
    post({ type: 'error', req: data.req, message: `unknown request ${data.type}` });
    return;
  }
  try {
    post({ type: 'result', req: data.req, value: await run(data) });
  } catch (e) {
    post({ type: 'error', req: data.req, message: e instanceof Error ? e.message : String(e) });
  }
};
