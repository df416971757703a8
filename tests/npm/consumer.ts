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
  // Acting on it: interventions, the next-token distribution, search and the logit lens.
  await inspector.intervene(0, proj, 3, 0);
  inspector.addEventListener('interventions-change', (e) => console.log(e.detail.interventions.length));
  const hits = (await inspector.search(' the')).hits.map((h) => `${h.layer}:${h.proj}:${h.slot}=${h.score}`);
  const set = await tf.setInterventions([{ layer: 0, proj, slot: 1, factor: 2 }]);
  const next = await tf.nextTokens(stats.ids, 10);
  const lens = await tf.logitLens(stats.ids, 5);
  const { engine } = await createEngine(DEFAULT_MODEL, { backend: 'cpu' });
  const ids: Uint32Array = engine.encode(prompt);
  engine.setInterventions([{ layer: 0, proj: 'query', slot: 2, factor: 0 }]);
  const found = await engine.search(ids[0], 3);
  const probs: Float32Array = (await engine.logitLens(ids, 5)).probs;
  engine.start(ids, { max_tokens: 4 });
  for (let t = await engine.step(); t; t = await engine.step()) text += t.text;
  return `${text} ${row.length} ${dictionary[0]?.text} ${csv.size} ${stats.stopReason} ${hits[0]} ${set[0]?.factor} ` +
    `${next.top[0]?.prob} ${next.passes} ${lens.topTexts[0]} ${found.hits[0]?.score} ${probs[0]} ${engine.passes}`;
}
