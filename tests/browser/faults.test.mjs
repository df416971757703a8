// node --test: faults the page must survive. A download cut off mid-file resumes with an HTTP Range
// request; a download that keeps failing ends in a clear error and the page keeps its model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';
import { PAGE_CSP, nativeGreedy, openPage, waitLoaded, setGreedy, generate } from './pages.mjs';

const WEIGHTS = '/models/tokenformer-moby/model.safetensors';
const BROKEN = '/tests/fixtures/softmax/pytorch_model.bin';

test('downloads resume after a dropped connection, and fail clearly when they cannot', async (t) => {
  // The built-in model's weights are cut off after 1 MiB once; the fixture's always after 1 KB.
  const server = await serve({ csp: PAGE_CSP, drops: { [WEIGHTS]: { after: 1 << 20, times: 1 }, [BROKEN]: { after: 1000, times: 100 } } });
  const browser = await launch({ webgpu: false });
  try {
    const { page, errors } = await openPage(browser.context, server);
    await waitLoaded(page, 'tokenformer-moby');

    await t.test('the cut-off download resumed from where it stopped', async () => {
      const asked = server.requests.filter((r) => r.path === WEIGHTS && r.method === 'GET');
      assert.equal(asked.length, 2);
      assert.equal(asked[0].range, undefined);
      // The retry asks for the rest from the first byte the page did not get.
      const from = Number(/^bytes=(\d+)-$/.exec(asked[1].range)?.[1]);
      assert.ok(from > 0 && from <= 1 << 20, asked[1].range);
      // And the model that loaded is the right one: it generates the native greedy text.
      await setGreedy(page, 8);
      const got = await generate(page, 'The sea was');
      assert.deepEqual(got.ids, nativeGreedy('The sea was', 8).ids);
    });

    await t.test('a download that keeps failing is a clear error and the page keeps its model', async () => {
      await page.locator('input[name=source][value=url]').check();
      await page.locator('#model-url').fill(`${server.url}${BROKEN}`);
      await page.getByRole('button', { name: 'Load model' }).click();
      await page.waitForFunction(() => document.getElementById('notice').className === 'error' && !document.getElementById('notice').hidden, null, { timeout: 60_000 });
      const notice = await page.locator('#notice-text').textContent();
      assert.match(notice, /pytorch_model\.bin: cannot download .* at byte \d+ of \d+ after 4 attempts/);
      assert.equal(server.requests.filter((r) => r.path === BROKEN && r.method === 'GET').length, 4);
      const got = await generate(page, 'The sea was');
      assert.deepEqual(got.ids, nativeGreedy('The sea was', 8).ids);
    });

    // Chromium logs each failed fetch; nothing else may appear.
    assert.deepEqual(errors.filter((e) => !/ERR_|Failed to load resource/.test(e)), []);
  } finally {
    await browser.close();
    server.close();
  }
});
