// Runs the wasm build on every fixture model, on the CPU backend and on WebGPU, and checks it
// against the float64 reference: logits, tokenizer ids, greedy and seeded sampled continuations.
// Results go to window.__results.
import init, { Engine } from '/pkg/tokenformer.js';

const VARIANTS = ['l2_norm_gelu', 'gelu_l2_norm', 'softmax', 'l2_norm_gelu_bf16'];
// Each norm variant's weights quantized; their expected numbers are the reference's on the
// dequantized weights, which the runtime must compute from the blocks.
const QUANTIZED = ['l2_norm_gelu', 'gelu_l2_norm', 'softmax'].flatMap((v) => [`${v}_q8`, `${v}_q4`]);

async function bytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// Logits tolerance against the float64 reference: f32 on the CPU, f32 weights on the GPU (other
// summation orders, GPU exp/erf), f16 weights on the GPU (weight rounding shows).
const TOLERANCE = {
  cpu: 1e-4, 'cpu-f16': 5e-2, webgpu: 1e-3, 'webgpu-f16': 5e-2, 'webgpu-gpu-kernels': 1e-3,
  'cpu-quantized': 1e-4, 'webgpu-quantized': 1e-3,
};

async function generate(engine, ids, params) {
  engine.start(Uint32Array.from(ids), params);
  const out = [];
  for (let t = await engine.step(); t; t = await engine.step()) out.push(t.id);
  return out;
}

const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

async function checkVariant(variant, setup) {
  const base = `/tests/fixtures/${variant}/`;
  const weightsFile = /_(bf16|q8|q4)$/.test(variant) ? 'model.safetensors' : 'pytorch_model.bin';
  const [config, weights, tokenizer, expected] = await Promise.all([
    bytes(base + 'config.json'), bytes(base + weightsFile), bytes(base + 'tokenizer.json'),
    fetch(base + 'expected.json').then((r) => r.json()),
  ]);
  // A quantized fixture is kept as its blocks (its own dtype), with the exact (f32) KV cache.
  const quantized = variant.match(/_(q8|q4)$/)?.[1];
  const options = quantized
    ? { backend: setup.backend, dtype: quantized, kvCache: 'f32' }
    : { backend: setup.backend, dtype: setup.dtype, kernels: setup.kernels };
  const engine = await Engine.load(config, weights, tokenizer, options);
  const name = `wasm ${setup.name} ${variant}`;
  const problems = [];
  if (engine.backend !== setup.backend) problems.push(`runs on ${engine.backend}: ${engine.notice}`);
  let maxErr = 0;
  for (const c of expected.cases.filter((_, i) => !setup.cases || setup.cases.includes(i))) {
    if (c.text !== undefined && !same(Array.from(engine.encode(c.text)), c.ids)) problems.push(`tokenizer on ${JSON.stringify(c.text)}`);
    const logits = await engine.logits(Uint32Array.from(c.ids));
    c.logits.flat().forEach((v, i) => { maxErr = Math.max(maxErr, Math.abs(v - logits[i])); });
    if (logits.length !== c.logits.flat().length) problems.push(`${logits.length} logits`);
    // f16 weights may legitimately pick other tokens; f32 must give the reference's.
    if (setup.dtype === 'f16') continue;
    // A quick setup generates the first few tokens (each draw depends on its step only, so they are
    // the expected ids' first few), and samples only with top-k, unless it has GPU kernels (which
    // then walk the whole vocabulary over many workgroups).
    const first = (ids) => (setup.quick ? ids.slice(0, setup.quick) : ids);
    const greedy = await generate(engine, c.ids, { max_tokens: setup.quick ?? 32 });
    if (!same(greedy, first(c.greedy))) problems.push(`greedy after [${c.ids}]: ${greedy} vs ${c.greedy}`);
    for (const s of c.sampled.filter((s) => !setup.quick || s.top_k > 0 || setup.kernels === 'gpu')) {
      const { ids, ...params } = s;
      const got = await generate(engine, c.ids, { ...params, max_tokens: setup.quick ? Math.min(setup.quick, params.max_tokens) : params.max_tokens });
      if (!same(got, first(ids))) problems.push(`sampled ${JSON.stringify(params)}: ${got} vs ${ids}`);
    }
  }
  if (!(maxErr < TOLERANCE[setup.name])) problems.push(`logits max |error| ${maxErr} over ${TOLERANCE[setup.name]}`);
  engine.free();
  return { name, pass: problems.length === 0, detail: problems.join('; ') || `logits max |error| ${maxErr.toExponential(2)}` };
}

async function checkErrors() {
  // Bad input must come back as a JS exception with the crate's message, and the module stays usable.
  const problems = [];
  try {
    await Engine.load(new TextEncoder().encode('{}'), new Uint8Array(10), new Uint8Array(0));
    problems.push('bad config accepted');
  } catch (e) {
    if (!String(e.message).includes('config.json')) problems.push(`unexpected message: ${e.message}`);
  }
  const fixture = '/tests/fixtures/softmax/';
  const files = await Promise.all(['config.json', 'pytorch_model.bin', 'tokenizer.json'].map((f) => bytes(fixture + f)));
  try {
    await Engine.load(...files, { backend: 'tpu' });
    problems.push('unknown backend accepted');
  } catch (e) {
    if (!String(e.message).includes('load options')) problems.push(`unexpected message: ${e.message}`);
  }
  // Weights through a reader give the same logits as the whole array; a failing reader is an error.
  const [config, weights, tokenizer] = files;
  const reads = [];
  const reader = { size: weights.length, read: (o, n) => { reads.push(n); return weights.slice(o, o + n); } };
  const viaReader = await Engine.load(config, reader, tokenizer, { backend: 'cpu' });
  const viaArray = await Engine.load(config, weights, tokenizer, { backend: 'cpu' });
  const ids = Uint32Array.from([3, 1, 4]);
  if (!same(Array.from(await viaReader.logits(ids)), Array.from(await viaArray.logits(ids)))) problems.push('reader logits differ');
  // Read front to back in pieces of at most 1 MiB, never the whole file at once.
  if (Math.max(...reads) > 1 << 20 || reads.length < Math.ceil(weights.length / (1 << 20))) problems.push(`the reader was asked for ${reads}`);
  viaReader.free();
  viaArray.free();
  try {
    await Engine.load(config, { size: weights.length, read: () => { throw new Error('disk gone'); } }, tokenizer, { backend: 'cpu' });
    problems.push('failing reader accepted');
  } catch (e) {
    if (!String(e.message).includes('disk gone')) problems.push(`unexpected message: ${e.message}`);
  }
  // Overlapping calls are refused with a message, and the engine stays usable afterwards (on
  // WebGPU, where a call really waits for the device; CPU calls run to completion one by one).
  const engine = await Engine.load(...files, { backend: 'webgpu' });
  const first = engine.logits(Uint32Array.from([1, 2]));
  try {
    await engine.logits(Uint32Array.from([1]));
    problems.push('overlapping call accepted');
  } catch (e) {
    if (!String(e.message).includes('busy')) problems.push(`unexpected message: ${e.message}`);
  }
  await first;
  engine.start(Uint32Array.from([1, 2]), { max_tokens: 3 });
  engine.cancel();
  if ((await engine.step()) !== undefined) problems.push('step after cancel gave a token');
  engine.start(Uint32Array.from([1, 2]), { max_tokens: 3 });
  if ((await engine.step()) === undefined) problems.push('no token after cancel + start');
  engine.free();
  return { name: 'wasm errors are exceptions', pass: problems.length === 0, detail: problems.join('; ') };
}

async function checkDeviceLost() {
  // A WebGPU device lost in the middle of a generation: the engine's calls reject with a clear
  // message instead of hanging or trapping, and a new engine (a new device) works.
  const problems = [];
  const files = await Promise.all(['config.json', 'pytorch_model.bin', 'tokenizer.json'].map((f) => bytes(`/tests/fixtures/l2_norm_gelu/${f}`)));
  const engine = await Engine.load(...files, { backend: 'webgpu' });
  engine.start(Uint32Array.from([1, 2, 3]), { max_tokens: 20 });
  if (!(await engine.step())) problems.push('no first token');
  engine.releaseGpu();
  const messages = [];
  for (const call of [() => engine.step(), () => engine.step(), () => engine.logits(Uint32Array.from([1, 2]))]) {
    try {
      await call();
    } catch (e) {
      messages.push(e.message);
    }
  }
  if (!messages.some((m) => /device was lost/.test(m))) problems.push(`no "device was lost" error: ${JSON.stringify(messages)}`);
  engine.free();
  const again = await Engine.load(...files, { backend: 'webgpu' });
  const want = await (await Engine.load(...files, { backend: 'cpu' })).logits(Uint32Array.from([5, 6, 7]));
  const got = await again.logits(Uint32Array.from([5, 6, 7]));
  const err = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
  if (!(err < 1e-3)) problems.push(`a new engine after the loss is off by ${err}`);
  again.free();
  return { name: 'a lost WebGPU device is an error and a new engine works', pass: problems.length === 0, detail: problems.join('; ') || `errors: ${messages.join(' | ')}` };
}

/** Top `k` values of a reference row, largest first. */
const topValues = (row, k) => row.slice().sort((a, b) => b - a).slice(0, k);

async function checkInspect(backend) {
  // Theta, attention and summaries from the wasm engine against the float64 reference
  // (tests/fixtures/inspect.json); on WebGPU the summaries are reduced on the device.
  const fixture = await fetch('/tests/fixtures/inspect.json').then((r) => r.json());
  const tolerance = backend === 'cpu' ? 1e-4 : 1e-3;
  const problems = [];
  const err = { theta: 0, attention: 0, top: 0 };
  let maps = 0;
  const dictionaries = [];
  for (const m of fixture.models) {
    const base = `/tests/fixtures/${m.model}/`;
    const files = await Promise.all(['config.json', 'pytorch_model.bin', 'tokenizer.json'].map((f) => bytes(base + f)));
    const engine = await Engine.load(...files, { backend });
    const ids = Uint32Array.from(m.ids);
    const summary = await engine.inspectSummary(ids, 3);
    if (summary.maps.length !== engine.layers * 5) problems.push(`${m.model}: ${summary.maps.length} summaries`);
    for (const l of m.layers) {
      for (const [proj, rows] of Object.entries(l.theta)) {
        const got = await engine.inspect(ids, l.layer, proj);
        if (got.tokens !== rows.length || got.slots !== rows[0].length || got.proj !== proj || got.layer !== l.layer) {
          problems.push(`${m.model} layer ${l.layer} ${proj}: shape ${got.tokens}x${got.slots}`);
          continue;
        }
        rows.flat().forEach((v, i) => { err.theta = Math.max(err.theta, Math.abs(v - got.weights[i])); });
        const s = summary.maps.find((x) => x.layer === l.layer && x.proj === proj);
        rows.forEach((row, t) => topValues(row, 3).forEach((v, i) => { err.top = Math.max(err.top, Math.abs(v - s.values[t * 3 + i])); }));
        maps++;
      }
      if (l.attention) {
        const a = await engine.attention(ids, l.layer);
        l.attention.flat(2).forEach((v, i) => { err.attention = Math.max(err.attention, Math.abs(v - a.probs[i])); });
        const block = await engine.inspectBlock(ids, l.layer, 'ffn');
        if (block.attention.probs.some((v, i) => v !== a.probs[i])) problems.push('inspectBlock attention differs from attention');
      }
    }
    dictionaries.push(await engine.dictionary(0, 'ffn', 1, 5));
    try {
      await engine.inspect(ids, 99, 'ffn');
      problems.push('layer 99 accepted');
    } catch (e) {
      if (!String(e.message).includes('out of range')) problems.push(`unexpected message: ${e.message}`);
    }
    try {
      await engine.dictionary(0, 'ffn', 1 << 20, 5);
      problems.push('slot 2^20 accepted');
    } catch (e) {
      if (!String(e.message).includes('parameter token')) problems.push(`unexpected message: ${e.message}`);
    }
    // Live: inspecting a running generation without ids covers the tokens in its cache, and the
    // generation goes on to the same tokens as without the inspection.
    const params = { temperature: 0, max_tokens: 5 };
    engine.start(ids, params);
    const plain = [];
    for (let t = await engine.step(); t; t = await engine.step()) plain.push(t.id);
    engine.start(ids, params);
    const live = [(await engine.step()).id, (await engine.step()).id];
    const during = await engine.inspect(undefined, 0, 'key');
    if (during.ids.join() !== [...m.ids, live[0]].join()) problems.push(`live inspection covered ${[...during.ids]}`);
    for (let t = await engine.step(); t; t = await engine.step()) live.push(t.id);
    if (live.join() !== plain.join()) problems.push(`generation changed by live inspection: ${live} vs ${plain}`);
    const after = await engine.inspectSummary(undefined, 1);
    if (after.tokens !== m.ids.length + plain.length) problems.push(`after the run: ${after.tokens} tokens`);
    engine.free();
  }
  if (maps === 0) problems.push('no maps compared');
  for (const [what, e] of Object.entries(err)) if (!(e < tolerance)) problems.push(`${what} max |error| ${e}`);
  const detail = `${maps} maps; max |error| Theta ${err.theta.toExponential(2)}, top-3 ${err.top.toExponential(2)}, attention ${err.attention.toExponential(2)}`;
  return { name: `wasm inspection on ${backend} matches the reference`, pass: problems.length === 0, detail: problems.join('; ') || detail, dictionaries };
}

try {
  await init();
  const results = [];
  const setups = [
    { name: 'cpu', backend: 'cpu' },
    { name: 'cpu-f16', backend: 'cpu', dtype: 'f16' },
    { name: 'webgpu', backend: 'webgpu', dtype: 'f32' },
    { name: 'webgpu-f16', backend: 'webgpu', dtype: 'f16' },
    // SwiftShader is a fallback (CPU) adapter: this runs the kernels a real GPU gets (tiled prefill,
    // 96-workgroup decode, top-k from sorted chunks, sampling without top-k walked over many
    // workgroups) through the browser's own WGSL compiler; they
    // are ~6x slower on SwiftShader, so only on one model, its shortest and longest prompts, and
    // the first 3 tokens.
    { name: 'webgpu-gpu-kernels', backend: 'webgpu', dtype: 'f32', kernels: 'gpu', variants: ['l2_norm_gelu'], cases: [0, 3], quick: 3 },
    { name: 'cpu-quantized', backend: 'cpu', variants: QUANTIZED },
    { name: 'webgpu-quantized', backend: 'webgpu', variants: QUANTIZED },
  ];
  for (const setup of setups) {
    for (const v of setup.variants ?? VARIANTS) results.push(await checkVariant(v, setup));
  }
  results.push(await checkErrors());
  results.push(await checkDeviceLost());
  const inspections = [await checkInspect('cpu'), await checkInspect('webgpu')];
  // The GPU's dictionaries (value vector through the tied head on the device) equal the CPU's.
  const [cpuDict, gpuDict] = inspections.map((r) => r.dictionaries);
  const dictError = Math.max(...cpuDict.flatMap((d, m) => d.map((e, i) => (e.id === gpuDict[m][i].id ? Math.abs(e.score - gpuDict[m][i].score) : Infinity))));
  results.push(...inspections.map(({ dictionaries, ...r }) => r));
  results.push({ name: 'dictionaries on WebGPU equal the CPU', pass: dictError < 1e-4, detail: `max |score difference| ${dictError.toExponential(2)}` });
  window.__results = results;
} catch (e) {
  window.__error = String(e && e.stack || e);
}
