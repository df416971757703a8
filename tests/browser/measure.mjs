// Measures the page per backend: load time, wasm memory after loading, and generation speed
// (time to first token, decode tokens/s) for 16 greedy tokens. Not part of the test suite:
//   node tests/browser/measure.mjs                  # the built-in model
//   cargo run --release -- synthetic --size 150m --tokenizer models/gpt-neox-20b/tokenizer.json /tmp/tf150m
//   node tests/browser/measure.mjs /tmp/tf150m      # a 150M-shaped model from local files
//   node tests/browser/measure.mjs --backend=cpu    # only the CPU backend (or webgpu)
//   node tests/browser/measure.mjs --dtype=f32,q8   # only these weight dtypes (f32, f16, q8, q4)
//   node tests/browser/measure.mjs --tokens=128     # generate 128 tokens (default 16)
import { join } from 'node:path';
import { serve, launch } from './harness.mjs';
import { pageWith } from './pages.mjs';

const args = process.argv.slice(2);
const only = args.find((a) => a.startsWith('--backend='))?.slice('--backend='.length);
const tokens = Number(args.find((a) => a.startsWith('--tokens='))?.slice('--tokens='.length) ?? 16);
const dir = args.find((a) => !a.startsWith('--'));
const onlyDtype = args.find((a) => a.startsWith('--dtype='))?.slice('--dtype='.length);
const runs = ['webgpu', 'cpu'].flatMap((backend) => ['f32', 'f16', 'q8', 'q4'].map((dtype) => [backend, dtype]))
  .filter(([backend, dtype]) => (!only || backend === only) && (!onlyDtype || onlyDtype.split(',').includes(dtype)));
if (!runs.length) throw new Error(`--backend=${only} --dtype=${onlyDtype}: no such run (webgpu or cpu; f32, f16, q8, q4)`);
const server = await serve();
const results = [];
try {
  for (const [backend, dtype] of runs) {
    // A fresh browser per run: a fresh worker and wasm memory, and WebGPU only when asked for.
    const browser = await launch({ webgpu: backend === 'webgpu' });
    try {
      const page = await pageWith(browser.context, server, backend, dtype);
      const start = Date.now();
      if (dir) {
        await page.locator('#model-files').setInputFiles(['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(dir, f)));
      } else {
        await page.evaluate(() => { delete document.body.dataset.model; });
        await page.getByRole('button', { name: 'Load model' }).click();
      }
      const name = dir ? 'model.safetensors' : 'tokenformer-moby';
      await page.waitForFunction((n) => document.body.dataset.model === n || document.getElementById('notice').className === 'error',
        name, { timeout: 600_000 });
      const loadSeconds = (Date.now() - start) / 1000;
      const error = await page.evaluate(() => document.getElementById('notice').className === 'error' && document.getElementById('notice-text').textContent);
      if (error) throw new Error(error);
      const model = await page.locator('#model-name').textContent();
      await page.getByLabel('Temperature').fill('0');
      await page.getByLabel('Max tokens').fill(String(tokens));
      await page.getByLabel('Prompt').fill('The sea was');
      await page.getByRole('button', { name: 'Generate' }).click();
      await page.waitForFunction(() => document.getElementById('output').dataset.done, null, { timeout: 600_000 });
      const stats = await page.locator('#stats').textContent();
      results.push({ backend, dtype, loadSeconds, wasmMemory: model.match(/wasm memory (.*)/)?.[1], stats });
      console.log(`${backend} ${dtype}: loaded in ${loadSeconds.toFixed(1)} s; ${model}\n  ${stats}`);
    } finally {
      await browser.close();
    }
  }
} finally {
  server.close();
}
