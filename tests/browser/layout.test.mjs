// node --test: the page fits a phone-width screen (390 px, an iPhone's CSS width): nothing sticks
// out past the right edge, so it never scrolls sideways, with the model panel's menus and cache
// list open and after a generation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';
import { openPage, waitLoaded, setGreedy, generate } from './pages.mjs';

/** Elements whose right edge passes the viewport's, and the document's scroll width. */
const overflow = (page) => page.evaluate(() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5)
    .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''} (right edge ${Math.round(e.getBoundingClientRect().right)} px)`);
  return { width, scrollWidth: document.documentElement.scrollWidth, wide };
});

test('the page fits a 390 px wide screen', { timeout: 300_000 }, async () => {
  const server = await serve();
  const browser = await launch({ webgpu: false });
  try {
    const { page, errors } = await openPage(browser.context, server);
    await page.setViewportSize({ width: 390, height: 844 });
    await waitLoaded(page, 'tokenformer-moby');
    await page.evaluate(() => { document.getElementById('cache-panel').open = true; });
    await setGreedy(page, 12);
    await generate(page, 'The sea was');
    const { width, scrollWidth, wide } = await overflow(page);
    assert.equal(width, 390);
    assert.deepEqual(wide, [], 'elements past the right edge');
    assert.equal(scrollWidth, 390, 'the page scrolls sideways');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
  }
});
