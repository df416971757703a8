// node --test: a released-size checkpoint loaded the way a user loads one from the hub. A
// 150M-shaped model in the authors' layout (a float32 pytorch_model.bin of 608 MB, written by
// `tokenformer synthetic --layout authors`) is served by `cargo xtask serve` (streamed, Range,
// CORS) on another port, loaded through the page's URL field on WebGPU (SwiftShader) with q4
// weights (quantized as the f32 rows stream in), and must give the native CLI's greedy token with
// `--dtype q4` while the browser's resident memory grows by no more than the GPU buffers + 512 MiB
// (SwiftShader keeps the buffers in process memory; the RSS of every browser process is summed
// from /proc every 100 ms). A model over a forced memory budget is refused before its weights are
// requested. With the server stopped, the reloaded page loads the model from its cache (the q4
// copy, a quarter of the file). Corrupting and deleting a cache
// entry are tested on a small model in cache.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, launch, hubServer, rssOf, BROWSER_MARKER, ROOT } from './harness.mjs';
import { BIN, openPage, waitLoaded, setGreedy, generate, nativeGreedy, loadUrl } from './pages.mjs';

test('a 150M-shaped checkpoint in the authors\' layout streams from a hub-like server into WebGPU', { timeout: 900_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tokenformer-150m-'));
  execFileSync(BIN, ['synthetic', '--size', '150m', '--layout', 'authors', '--tokenizer', join(ROOT, 'models/gpt-neox-20b/tokenizer.json'), dir]);
  const model = await hubServer(dir);
  const server = await serve();
  const browser = await launch({ webgpu: true });
  try {
    const { page, errors } = await openPage(browser.context, server);
    await waitLoaded(page, 'tokenformer-moby');

    await t.test('a model over the memory budget is refused before its weights are fetched', async () => {
      const refused = await page.evaluate(async (url) => {
        const { createEngine } = await import('/www/engine.js');
        try {
          await createEngine({ kind: 'url', url }, { backend: 'webgpu', dtype: 'f16', memoryBudget: 100e6 });
          return null;
        } catch (e) {
          return e.message;
        }
      }, model.url);
      assert.match(refused ?? 'loaded', /this model needs about \d+\.\d MB .* more than its 100\.0 MB budget; .*a smaller model would fit/);
      const asked = (await page.evaluate(() => performance.getEntriesByType('resource').map((r) => r.name)))
        .filter((n) => n.startsWith(model.url));
      assert.ok(asked.some((n) => n.endsWith('config.json')), 'config.json was not fetched');
      assert.ok(!asked.some((n) => /pytorch_model\.bin|model\.safetensors/.test(n)), 'the weights were requested');
    });

    await t.test('loads within the GPU buffers + 512 MiB and generates the CLI\'s greedy token', async () => {
      const plan = await page.evaluate(async (url) => {
        const { Engine, initWasm } = await import('/www/engine.js');
        await initWasm();
        const config = new Uint8Array(await (await fetch(url + 'config.json')).arrayBuffer());
        return Engine.planMemory(config, 50277, 'q4');
      }, model.url);
      let before = 0;
      let peak = 0;
      let sampler = null;
      const start = () => {
        before = peak = rssOf(BROWSER_MARKER);
        sampler = setInterval(() => { peak = Math.max(peak, rssOf(BROWSER_MARKER)); }, 100);
      };
      let loaded;
      try {
        loaded = await loadUrl(page, model.url, { backend: 'webgpu', dtype: 'q4', timeout: 600_000, beforeClick: start });
      } finally {
        clearInterval(sampler);
      }
      assert.notEqual(loaded.kind, 'error', loaded.notice);
      const grew = peak - before;
      const budget = plan.total + 2 ** 29;
      t.diagnostic(`resident memory grew by ${(grew / 1e9).toFixed(2)} GB; GPU buffers ${(plan.total / 1e9).toFixed(2)} GB`);
      assert.ok(grew <= budget, `grew by ${grew} bytes, more than the GPU buffers (${plan.total}) + 512 MiB`);
      await setGreedy(page, 1);
      const got = await generate(page, 'The sea was');
      assert.deepEqual(got.ids, nativeGreedy('The sea was', 1, dir, 'q4').ids);
      // Cached for the next visit as the q4 copy the GPU uses (the embedding in f16): a quarter of the
      // f32 file.
      assert.match(loaded.line, /cached for the next visit/);
      const cached = await page.evaluate(async () => (await import('/www/cache.js')).list());
      assert.equal(cached.length, 1);
      assert.equal(cached[0].dtype, 'q4');
      t.diagnostic(`cached copy ${(cached[0].size / 1e6).toFixed(1)} MB`);
      assert.ok(cached[0].size < 0.25 * 607.6e6, `cached ${cached[0].size} bytes`);
    });

    await t.test('with the server stopped, the reloaded page loads it from the cache', async () => {
      await model.close();
      await page.reload();
      await waitLoaded(page, 'tokenformer-moby');
      const { line } = await loadUrl(page, model.url, { backend: 'webgpu', dtype: 'q4', timeout: 600_000 });
      assert.match(line, /from the cache/);
      await setGreedy(page, 1);
      assert.deepEqual((await generate(page, 'The sea was')).ids, nativeGreedy('The sea was', 1, dir, 'q4').ids);
    });

    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
    await model.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
