// Type-checked (tsc --noEmit, strict) against the installed package's declarations by package.test.mjs.
import { TokenFormerClient, createEngine, DEFAULT_MODEL, type ModelInfo, type GenerationStats, type Projection } from 'tokenformer-web';
import { TokenFormerInspector } from 'tokenformer-web/inspector';

export async function run(prompt: string): Promise<string> {
  const tf = new TokenFormerClient();
  const info: ModelInfo = await tf.load(undefined, { backend: 'auto', dtype: 'f16' }, (p) => console.log(p.phase, p.loaded / p.total));
  let text = '';
  const stats: GenerationStats = await tf.generate(prompt, { temperature: 0.8, top_k: 40, seed: 1, max_tokens: 32 }, (t) => { text += t.text; });
  const proj: Projection = 'ffn';
  const map = await tf.inspect(undefined, info.layers - 1, proj);
  const row: Float32Array = map.weights.subarray(0, map.slots);
  const dictionary = await tf.dictionary(0, proj, 0, 5);
  const inspector: TokenFormerInspector = document.createElement('tokenformer-inspector');
  inspector.client = tf;
  inspector.model = info;
  await inspector.inspect(stats.ids);
  inspector.addEventListener('slot-select', (e) => console.log(e.detail.slot));
  const csv: Blob = await inspector.exportBlob('CSV');
  const { engine } = await createEngine(DEFAULT_MODEL, { backend: 'cpu' });
  const ids: Uint32Array = engine.encode(prompt);
  engine.start(ids, { max_tokens: 4 });
  for (let t = await engine.step(); t; t = await engine.step()) text += t.text;
  return `${text} ${row.length} ${dictionary[0]?.text} ${csv.size} ${stats.stopReason}`;
}
