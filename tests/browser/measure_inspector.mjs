// Measures the inspector on a long prompt: time to compute the grid (every layer × projection,
// reduced) and to open one map, and the frame time of zooming, panning and re-thresholding the
// map. Not part of the test suite:
//   cargo run --release -- synthetic --size 150m --tokenizer models/gpt-neox-20b/tokenizer.json /tmp/tf150m
//   node tests/browser/measure_inspector.mjs /tmp/tf150m [cpu|webgpu] [TOKENS]
//   node tests/browser/measure_inspector.mjs                # the built-in model, 256 tokens
import { join } from 'node:path';
import { serve, launch } from './harness.mjs';
import { inspectLongPrompt, frameReport } from './pages.mjs';

const [dir, backend = 'cpu', tokens = '256'] = process.argv.slice(2);
const server = await serve();
const browser = await launch({ webgpu: backend === 'webgpu' });
try {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1280, height: 1400 });
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => document.body.dataset.model === 'tokenformer-moby', null, { timeout: 120_000 });
  await page.selectOption('#backend', backend);
  if (dir) {
    await page.locator('#model-files').setInputFiles(['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(dir, f)));
    await page.waitForFunction(() => document.body.dataset.model === 'model.safetensors' || document.getElementById('notice').className === 'error', null, { timeout: 600_000 });
  }
  const model = await page.locator('#model-name').textContent();
  const result = await inspectLongPrompt(page, Number(tokens));
  console.log(`${model}\n${backend}: ${result.tokens} tokens; layer 0 ffn map ${result.tokens} x ${result.slots}`);
  console.log(frameReport(result));
} finally {
  await browser.close();
  server.close();
}
