// A Vite app: `npm run build` bundles the worker, copies the .wasm and the built-in model as
// assets; nothing is fetched from anywhere else.
import { TokenFormerClient } from 'tokenformer-web';
import 'tokenformer-web/inspector';

const $ = (id) => document.getElementById(id);
const backend = new URLSearchParams(location.search).get('backend') ?? 'auto';
const tf = new TokenFormerClient();
try {
  const info = await tf.load(undefined, { backend });
  $('status').textContent = `${info.parameters} parameters on ${info.backend}`;
  const stats = await tf.generate($('prompt').value, { temperature: 0, max_tokens: 16 }, (t) => { $('output').textContent += t.text; });
  Object.assign($('output').dataset, { ids: stats.ids.join(','), done: stats.stopReason });
  // The inspector element on the prompt and what was generated.
  const inspector = $('inspector');
  inspector.client = tf;
  inspector.model = info;
  await inspector.inspect([...(await tf.encode($('prompt').value)), ...stats.ids]);
  await inspector.openMap(0, 'ffn');
  $('output').dataset.inspected = String(inspector.map.tokens);
} catch (e) {
  $('status').textContent = `Error: ${e.message}`;
  $('output').dataset.error = e.message;
}
