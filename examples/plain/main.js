// No bundler: the package's modules are loaded straight from node_modules; the worker, the .wasm
// and the built-in model are found next to them. `?engine=main` runs the engine on this page's
// thread instead of a worker, with the .wasm handed over as bytes (the `wasm` option).
import { TokenFormerClient, createEngine } from './node_modules/tokenformer-web/index.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const backend = query.get('backend') ?? 'auto';
const params = { temperature: 0, max_tokens: 16 };
const show = (t) => { $('output').textContent += t.text; };

/** The engine in a Web Worker, behind promises: the page never freezes. */
async function inWorker(prompt) {
  const tf = new TokenFormerClient();
  const info = await tf.load(undefined, { backend });
  $('status').textContent = `${info.parameters} parameters on ${info.backend} (worker)`;
  const stats = await tf.generate(prompt, params, show);
  return { ids: stats.ids, stopReason: stats.stopReason };
}

/** The engine on this thread: steps are promises, so the page stays responsive between tokens. */
async function onMainThread(prompt) {
  const wasm = await (await fetch(new URL('./node_modules/tokenformer-web/pkg/tokenformer_bg.wasm', import.meta.url))).arrayBuffer();
  const { engine, info } = await createEngine(undefined, { backend, wasm });
  $('status').textContent = `${info.parameters} parameters on ${info.backend} (main thread)`;
  engine.start(engine.encode(prompt), params);
  const ids = [];
  for (let t = await engine.step(); t; t = await engine.step()) {
    ids.push(t.id);
    show(t);
  }
  return { ids, stopReason: engine.stopReason };
}

try {
  const run = query.get('engine') === 'main' ? onMainThread : inWorker;
  const { ids, stopReason } = await run($('prompt').value);
  Object.assign($('output').dataset, { ids: ids.join(','), done: stopReason });
} catch (e) {
  $('status').textContent = `Error: ${e.message}`;
  $('output').dataset.error = e.message;
}
