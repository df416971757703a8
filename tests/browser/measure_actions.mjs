// Measures acting on the inspector on a model loaded from local files (the 150M shape): search by
// token over every value parameter token (the second search timed, after the kernels compiled on the
// first), and knocking out a parameter token with the next-token distribution redrawn (the engine's
// forward passes counted). Not part of the test suite:
//   target/release/tokenformer synthetic --size 150m --tokenizer models/gpt-neox-20b/tokenizer.json /tmp/tf150m
//   node tests/browser/measure_actions.mjs /tmp/tf150m [webgpu|cpu] [dtype]
import { join } from 'node:path';
import { serve, launch } from './harness.mjs';
import { pageWith } from './pages.mjs';

const [dir, backend = 'webgpu', dtype = 'auto'] = process.argv.slice(2);
const server = await serve();
const browser = await launch({ webgpu: backend === 'webgpu' });
try {
  const page = await pageWith(browser.context, server, backend, dtype);
  await page.locator('#model-files').setInputFiles(['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(dir, f)));
  await page.waitForFunction(() => document.body.dataset.model === 'model.safetensors' || document.getElementById('notice').className === 'error', null, { timeout: 900_000 });
  console.log(await page.locator('#model-name').textContent(), await page.locator('#engine-status').textContent());
  const result = await page.evaluate(async () => {
    const i = document.getElementById('inspector');
    const c = i.client;
    const time = async (f) => { const t = performance.now(); const v = await f(); return [performance.now() - t, v]; };
    const [first] = await time(() => c.search(' the', 20));
    const searches = [];
    for (const token of [' whale', ' sea', ' ship']) searches.push((await time(() => c.search(token, 20)))[0]);
    const ids = await c.encode('Call me Ishmael. Some years ago, never mind how long');
    await time(() => i.inspect(ids));
    const before = await c.passes();
    const [redraw] = await time(() => i.intervene(0, 'ffn', 7, 0));
    const passes = (await c.passes()) - before;
    return { first, searches, redraw, passes, tokens: ids.length };
  });
  console.log(`${backend}: search (first, kernels compiled) ${(result.first / 1000).toFixed(2)} s; then ${result.searches.map((s) => (s / 1000).toFixed(2)).join(', ')} s`);
  console.log(`knock out + redraw the next-token bars (${result.tokens} tokens): ${(result.redraw / 1000).toFixed(2)} s, ${result.passes} forward pass(es)`);
} finally {
  await browser.close();
  server.close();
}
