// Measures loading a model folder in the authors' layout the way a user loads one from the hub:
// served by `cargo xtask serve DIR` (streamed, Range, CORS) on another port, loaded through the
// page's URL field on WebGPU (SwiftShader) with f16 weights, then one greedy token, checked against
// the native CLI. Prints load time, download rate and the browser's peak resident memory during
// the load next to what the GPU buffers take (SwiftShader keeps them in process memory). Not part
// of the test suite:
//   cargo run --release -- synthetic --size 150m --layout authors --tokenizer models/gpt-neox-20b/tokenizer.json /tmp/tf150m-authors
//   node tests/browser/measure_load.mjs /tmp/tf150m-authors [--dtype=f16] [--tokens=1]
// Memory: every 100 ms the resident set sizes (RSS, /proc) of all of this browser's processes are
// summed; "during the load" is that sum's peak minus its value just before the load starts. Each
// process type's own peak growth is printed too (the GPU process holds SwiftShader's buffers and
// its shader compiler's working memory; the renderer the wasm engine).
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { serve, launch, hubServer, rssByProcess, BROWSER_MARKER } from './harness.mjs';
import { loadUrl } from './pages.mjs';
import { binary } from './cargo.mjs';

const args = process.argv.slice(2);
const dir = args.find((a) => !a.startsWith('--'));
if (!dir) throw new Error('usage: node tests/browser/measure_load.mjs MODEL_DIR [--dtype=f16] [--tokens=1]');
const dtype = args.find((a) => a.startsWith('--dtype='))?.slice(8) ?? 'f16';
const tokens = Number(args.find((a) => a.startsWith('--tokens='))?.slice(9) ?? 1);
const prompt = 'The sea was';

const gb = (b) => `${(b / 1e9).toFixed(2)} GB`;
// The release CLI: a debug build would take minutes per token at the 1.5B shape.
const native = JSON.parse(execFileSync(binary('tokenformer', 'release'),
  ['generate', '--model', dir, '--prompt', prompt, '--max-tokens', String(tokens), '--temperature', '0', '--dtype', dtype, '--json'], { encoding: 'utf8' }));

const hub = await hubServer(dir);
const server = await serve();
const browser = await launch({ webgpu: true });
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => document.body.dataset.model === 'tokenformer-moby', null, { timeout: 120_000 });
  const baselineByType = rssByProcess(BROWSER_MARKER);
  const baseline = Object.values(baselineByType).reduce((a, b) => a + b, 0);
  let peak = baseline;
  const peakByType = { ...baselineByType };
  const sampler = setInterval(() => {
    const byType = rssByProcess(BROWSER_MARKER);
    peak = Math.max(peak, Object.values(byType).reduce((a, b) => a + b, 0));
    for (const [type, rss] of Object.entries(byType)) peakByType[type] = Math.max(peakByType[type] ?? 0, rss);
  }, 100);
  const weightsFile = readdirSync(dir).find((f) => /\.(bin|safetensors)$/.test(f));
  const plan = await page.evaluate(async ({ url, dtype }) => {
    const { Engine, initWasm } = await import('/www/engine.js');
    await initWasm();
    const [config, tokenizer] = await Promise.all(['config.json', 'tokenizer.json'].map((f) => fetch(url + f).then((r) => r.json())));
    const vocab = Object.keys(tokenizer.model.vocab).length + (tokenizer.added_tokens ?? []).filter((t) => !(t.content in tokenizer.model.vocab)).length;
    return Engine.planMemory(new TextEncoder().encode(JSON.stringify(config)), vocab, dtype);
  }, { url: hub.url, dtype });
  const start = Date.now();
  const first = await loadUrl(page, hub.url, { backend: 'webgpu', dtype, timeout: 3_600_000 });
  const loadSeconds = (Date.now() - start) / 1000;
  clearInterval(sampler);
  if (first.kind === 'error') throw new Error(first.notice);
  await page.getByLabel('Temperature').fill('0');
  await page.getByLabel('Max tokens').fill(String(tokens));
  await page.getByLabel('Prompt').fill(prompt);
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.waitForFunction(() => document.getElementById('output').dataset.done, null, { timeout: 3_600_000 });
  const ids = await page.evaluate(() => (document.getElementById('output').dataset.ids || '').split(',').filter(Boolean).map(Number));
  const size = Number(execFileSync('stat', ['-c', '%s', join(dir, weightsFile)], { encoding: 'utf8' }));
  // The second visit: the page reloaded, the same URL, from the cache.
  const cached = await page.evaluate(async () => (await import('/www/cache.js')).list());
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.model === 'tokenformer-moby', null, { timeout: 120_000 });
  const again = Date.now();
  const { line } = await loadUrl(page, hub.url, { backend: 'webgpu', dtype, timeout: 3_600_000 });
  const cachedSeconds = (Date.now() - again) / 1000;
  const grew = peak - baseline;
  console.log(`${dir} (${weightsFile}, ${gb(size)}), WebGPU ${dtype}:`);
  console.log(`  loaded in ${loadSeconds.toFixed(1)} s (${(size / 1e6 / loadSeconds).toFixed(0)} MB/s)`);
  console.log(`  GPU buffers (plan): ${gb(plan.total)} = weights ${gb(plan.weights)} + KV cache ${gb(plan.kvCache)} + activations ${gb(plan.activations)}`);
  console.log(`  browser resident memory grew by ${gb(grew)} during the load (peak ${gb(peak)}); budget GPU buffers + 512 MiB = ${gb(plan.total + 2 ** 29)}: ${grew <= plan.total + 2 ** 29 ? 'within' : 'OVER'}`);
  console.log(`  by process, peak growth: ${Object.keys(peakByType).sort().map((type) => `${type} ${gb(peakByType[type] - (baselineByType[type] ?? 0))}`).join(', ')}`);
  console.log(`  cache: ${cached.map((c) => `${c.source} kept as ${c.dtype}, ${gb(c.size)}`).join('; ')}; second visit: ${line} in ${cachedSeconds.toFixed(1)} s`);
  console.log(`  greedy ids ${JSON.stringify(ids)} vs native ${JSON.stringify(native.ids)}: ${JSON.stringify(ids) === JSON.stringify(native.ids) ? 'equal' : 'DIFFERENT'}`);
} finally {
  await browser.close();
  server.close();
  await hub.close();
}
