// Measures the page's wasm memory after loading a model from local files, per backend.
// Not part of the test suite (it needs a large model folder):
//   python3 tools/synthetic_model.py --size 150m --out /tmp/tf150m
//   node tests/browser/memory.mjs /tmp/tf150m
import { join } from 'node:path';
import { serve, launch } from './harness.mjs';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tests/browser/memory.mjs MODEL_DIR');
  process.exit(2);
}
const files = ['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(dir, f));
const server = await serve();
const browser = await launch();
try {
  for (const [backend, dtype] of [['webgpu', 'f16'], ['webgpu', 'f32'], ['cpu', 'f32']]) {
    const page = await browser.context.newPage(); // a fresh page: a fresh worker and wasm memory
    await page.goto(`${server.url}/index.html`);
    await page.waitForFunction(() => document.body.dataset.model === 'tokenformer-moby', null, { timeout: 120_000 });
    const before = await page.locator('#model-name').textContent();
    await page.selectOption('#backend', backend);
    await page.selectOption('#dtype', dtype);
    const start = Date.now();
    await page.locator('#model-files').setInputFiles(files);
    await page.waitForFunction(() => document.body.dataset.model === 'model.safetensors'
      || document.getElementById('notice').className === 'error', null, { timeout: 600_000 });
    const after = await page.locator('#model-name').textContent();
    const error = await page.evaluate(() => document.getElementById('notice').className === 'error' && document.getElementById('notice-text').textContent);
    console.log(`${backend} ${dtype}: ${error || after} (${((Date.now() - start) / 1000).toFixed(1)} s; built-in model before: ${before.match(/wasm memory .*/)?.[0]})`);
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
