// node --test: the demo page (index.html + www/) in headless Chromium, as a person uses it.
// Greedy text is compared with the native CPU backend (the `tokenformer` binary); screenshots go
// to target/browser-artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve, launch, ROOT } from './harness.mjs';
import { ARTIFACTS, PAGE_CSP, nativeGreedy, openPage as open, waitLoaded, setGreedy, generate } from './pages.mjs';

const PROMPT = 'The sea was';
const FIXTURE = join(ROOT, 'tests/fixtures/l2_norm_gelu');

let server;
let browser;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  // The page's own policy (its <meta>) is also sent as a header, which is how workers get it.
  server = await serve({ csp: PAGE_CSP });
});
after(() => server.close());

const openPage = (context) => open(context, server);

for (const mode of ['webgpu', 'no-webgpu']) {
  test(`page (${mode})`, async (t) => {
    browser = await launch({ webgpu: mode === 'webgpu' });
    try {
      const { page, errors, foreign } = await openPage(browser.context);
      await waitLoaded(page, 'tokenformer-moby');
      const status = await page.locator('#engine-status').textContent();

      await t.test('the default model loads on the expected backend', async () => {
        assert.match(status, mode === 'webgpu' ? /WebGPU/ : /CPU/);
        if (mode !== 'webgpu') assert.match(await page.locator('#notice').textContent(), /WebGPU unavailable/);
        assert.match(await page.locator('#model-name').textContent(), /1\.57M parameters/);
      });

      await t.test('greedy text equals the native CPU backend', async () => {
        await setGreedy(page, 24);
        const got = await generate(page, PROMPT);
        const want = nativeGreedy(PROMPT, 24);
        assert.deepEqual(got.ids, want.ids);
        assert.equal(got.text, want.text);
        assert.match(await page.locator('#stats').textContent(), /tokens\/s/);
        await page.screenshot({ path: join(ARTIFACTS, `page-${mode}.png`), fullPage: true });
      });

      const pageIsClean = async () => {
        assert.deepEqual(errors, []);
        assert.deepEqual(foreign, [], 'requests to other origins');
        assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], 'Content-Security-Policy violations');
      };
      await t.test('runs under a strict Content-Security-Policy', async () => {
        // Every response carried PAGE_CSP, so the page and its worker both ran under it.
        assert.match(PAGE_CSP, /script-src 'self' 'wasm-unsafe-eval'/);
        assert.doesNotMatch(PAGE_CSP, /'unsafe-eval'|'unsafe-inline'/);
      });
      if (mode !== 'webgpu') {
        await pageIsClean();
        return;
      }

      await t.test('Stop ends a generation early and the page keeps working', async () => {
        await page.getByLabel('Max tokens').fill('200');
        await page.getByLabel('Prompt').fill(PROMPT);
        await page.getByRole('button', { name: 'Generate' }).click();
        await page.waitForFunction(() => (document.getElementById('output').dataset.ids ?? '').split(',').length >= 3);
        await page.getByRole('button', { name: 'Stop' }).click();
        await page.waitForFunction(() => document.getElementById('output').dataset.done);
        const ids = await page.evaluate(() => document.getElementById('output').dataset.ids.split(','));
        assert.equal(await page.evaluate(() => document.getElementById('output').dataset.done), 'cancelled');
        assert.ok(ids.length < 200, `${ids.length} tokens after Stop`);
        await setGreedy(page, 8);
        const again = await generate(page, PROMPT);
        assert.deepEqual(again.ids, nativeGreedy(PROMPT, 8).ids);
      });

      await t.test('a broken file shows an error and the page keeps working', async () => {
        const config = readFileSync(join(ROOT, 'models/tokenformer-moby/config.json'));
        const tokenizer = readFileSync(join(ROOT, 'models/tokenformer-moby/tokenizer.json'));
        const weights = readFileSync(join(ROOT, 'models/tokenformer-moby/model.safetensors')).subarray(0, 5000);
        await page.locator('#model-files').setInputFiles([
          { name: 'config.json', mimeType: 'application/json', buffer: config },
          { name: 'tokenizer.json', mimeType: 'application/json', buffer: tokenizer },
          { name: 'model.safetensors', mimeType: 'application/octet-stream', buffer: weights },
        ]);
        await page.waitForFunction(() => !document.getElementById('notice').hidden && document.getElementById('notice').className === 'error');
        const notice = await page.locator('#notice').textContent();
        assert.match(notice, /Could not load/);
        assert.match(notice, /safetensors|truncated|bytes/i);
        await page.screenshot({ path: join(ARTIFACTS, 'page-broken-file.png'), fullPage: true });
        // The previous model still generates.
        const got = await generate(page, PROMPT);
        assert.deepEqual(got.ids, nativeGreedy(PROMPT, 8).ids);
      });

      await t.test("a model in the authors' layout loads from local files", async () => {
        const files = ['config.json', 'pytorch_model.bin', 'tokenizer.json'].map((f) => join(FIXTURE, f));
        await page.locator('#model-files').setInputFiles(files);
        await waitLoaded(page, 'pytorch_model.bin');
        const prompt = 'the whale';
        const got = await generate(page, prompt);
        assert.deepEqual(got.ids, nativeGreedy(prompt, 8, FIXTURE).ids);
      });

      await pageIsClean();
    } finally {
      await browser.close();
    }
  });
}
