// Runs the wasm build on every fixture model and checks it against the float64 reference:
// logits, tokenizer ids, greedy and seeded sampled continuations. Results go to window.__results.
import init, { Engine } from '/pkg/tokenformer.js';

const VARIANTS = ['l2_norm_gelu', 'gelu_l2_norm', 'softmax', 'l2_norm_gelu_bf16'];

async function bytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function generate(engine, ids, params) {
  engine.start(Uint32Array.from(ids), params);
  const out = [];
  for (let t = engine.step(); t; t = engine.step()) out.push(t.id);
  return out;
}

const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

async function checkVariant(variant) {
  const base = `/tests/fixtures/${variant}/`;
  const weightsFile = variant.endsWith('_bf16') ? 'model.safetensors' : 'pytorch_model.bin';
  const [config, weights, tokenizer, expected] = await Promise.all([
    bytes(base + 'config.json'), bytes(base + weightsFile), bytes(base + 'tokenizer.json'),
    fetch(base + 'expected.json').then((r) => r.json()),
  ]);
  const engine = Engine.fromBytes(config, weights, tokenizer);
  const problems = [];
  let maxErr = 0;
  for (const c of expected.cases) {
    if (c.text !== undefined && !same(Array.from(engine.encode(c.text)), c.ids)) problems.push(`tokenizer on ${JSON.stringify(c.text)}`);
    const logits = engine.logits(Uint32Array.from(c.ids));
    c.logits.flat().forEach((v, i) => { maxErr = Math.max(maxErr, Math.abs(v - logits[i])); });
    const greedy = generate(engine, c.ids, { max_tokens: 32 });
    if (!same(greedy, c.greedy)) problems.push(`greedy after [${c.ids}]: ${greedy} vs ${c.greedy}`);
    for (const s of c.sampled) {
      const { ids, ...params } = s;
      const got = generate(engine, c.ids, params);
      if (!same(got, ids)) problems.push(`sampled ${JSON.stringify(params)}: ${got} vs ${ids}`);
    }
  }
  if (!(maxErr < 1e-4)) problems.push(`logits max |error| ${maxErr}`);
  engine.free();
  return { name: `wasm cpu ${variant}`, pass: problems.length === 0, detail: problems.join('; ') || `logits max |error| ${maxErr.toExponential(2)}` };
}

async function checkErrors() {
  // Bad input must come back as a JS exception with the crate's message, and the module stays usable.
  const problems = [];
  try {
    Engine.fromBytes(new TextEncoder().encode('{}'), new Uint8Array(10), new Uint8Array(0));
    problems.push('bad config accepted');
  } catch (e) {
    if (!String(e.message).includes('config.json')) problems.push(`unexpected message: ${e.message}`);
  }
  return { name: 'wasm errors are exceptions', pass: problems.length === 0, detail: problems.join('; ') };
}

try {
  await init();
  const results = [];
  for (const v of VARIANTS) results.push(await checkVariant(v));
  results.push(await checkErrors());
  window.__results = results;
} catch (e) {
  window.__error = String(e && e.stack || e);
}
