// No bundler: the package's modules are loaded straight from node_modules; the worker, the .wasm
// and the built-in model are found next to them.
import { TokenFormerClient } from './node_modules/tokenformer-web/index.js';

const $ = (id) => document.getElementById(id);
const backend = new URLSearchParams(location.search).get('backend') ?? 'auto';
const tf = new TokenFormerClient();
try {
  const info = await tf.load(undefined, { backend });
  $('status').textContent = `${info.parameters} parameters on ${info.backend}`;
  const stats = await tf.generate($('prompt').value, { temperature: 0, max_tokens: 16 }, (t) => { $('output').textContent += t.text; });
  Object.assign($('output').dataset, { ids: stats.ids.join(','), done: stats.stopReason });
} catch (e) {
  $('status').textContent = `Error: ${e.message}`;
  $('output').dataset.error = e.message;
}
