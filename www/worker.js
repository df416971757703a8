// The engine's Web Worker: loads models and generates, so the page never freezes. The message
// protocol is documented in client.js, which is the only code that talks to this file.
import { createEngine } from './engine.js';

let engine = null;
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

async function load({ req, source, options }) {
  const { engine: next, info } = await createEngine(source, options, (p) => post({ type: 'progress', req, ...p }));
  // Only a model that loaded replaces the current one: a bad file leaves the page as it was.
  stopRequested = true;
  engine?.cancel();
  engine?.free();
  engine = next;
  return info;
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
  // Acting on what the inspector shows.
  setInterventions: ({ list }) => exclusive(async () => {
    loadedEngine().setInterventions(list);
    return engine.interventions;
  }),
  nextTokens: ({ ids, k }) => exclusive(async () => {
    const top = await loadedEngine().nextTokens(Uint32Array.from(ids), k);
    return { top, passes: engine.passes };
  }),
  search: ({ token, k }) => exclusive(() => loadedEngine().search(token, k)),
  logitLens: ({ ids, k }) => exclusive(async () => {
    const lens = await loadedEngine().logitLens(idsArg(ids), k);
    return { ...lens, texts: texts(lens.ids), topTexts: texts(lens.top) };
  }),
  passes: async () => loadedEngine().passes,
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
