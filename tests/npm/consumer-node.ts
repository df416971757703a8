// Type-checked (tsc --noEmit, strict, nodenext resolution: the "node" export condition) against the
// installed package's Node declarations by package.test.mjs.
import { loadModel, generate, initWasm, DEFAULT_MODEL_DIR, type Engine, type SamplingParams } from 'tokenformer-web';

export async function run(prompt: string): Promise<string> {
  await initWasm();
  const engine: Engine = await loadModel(DEFAULT_MODEL_DIR, { onProgress: (done, total) => console.log(done / total) });
  const params: SamplingParams = { temperature: 0, max_tokens: 8 };
  const out = await generate(engine, prompt, params, (t) => console.log(t.id, t.text));
  const ids: number[] = out.ids;
  const logits: Float32Array = await engine.logits(engine.encode(prompt));
  return `${out.text} ${ids.length} ${logits.length / engine.vocabSize} ${out.stopReason}`;
}
