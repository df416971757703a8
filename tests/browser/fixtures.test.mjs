// node --test: the wasm build inside headless Chromium against the committed fixtures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';

test('wasm build in Chromium matches the float64 reference', async (t) => {
  const server = await serve();
  const browser = await launch();
  try {
    const page = await browser.context.newPage();
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(`${server.url}/tests/browser/fixtures.html`);
    await page.waitForFunction(() => window.__results || window.__error, null, { timeout: 900_000 });
    const error = await page.evaluate(() => window.__error);
    assert.equal(error, undefined, error);
    const results = await page.evaluate(() => window.__results);
    for (const r of results) {
      await t.test(r.name, (st) => { st.diagnostic(r.detail); assert.ok(r.pass, r.detail); });
    }
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
    server.close();
  }
});
