// Writes the screenshots README.md and docs/ show: www/screenshot.png (the page on WebGPU after a
// sampled generation with the page's default settings) and the inspector's grid, a large map, a
// slot's dictionary and an intervention with its effect (www/inspector-*.png).
// Run: node tests/browser/screenshot.mjs
import { join } from 'node:path';
import { serve, launch, ROOT } from './harness.mjs';

const server = await serve();
const browser = await launch();
try {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1200, height: 760 });
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => document.body.dataset.model === 'tokenformer-moby', null, { timeout: 120_000 });
  await page.getByLabel('Prompt').fill('The sea was');
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.waitForFunction(() => document.getElementById('output').dataset.done, null, { timeout: 300_000 });
  await page.screenshot({ path: join(ROOT, 'www/screenshot.png') });

  await page.setViewportSize({ width: 1200, height: 1600 });
  await page.getByLabel('Prompt').fill('Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.');
  await page.getByRole('button', { name: 'Inspect prompt and output' }).click();
  await page.waitForFunction(() => document.getElementById('inspector').summary, null, { timeout: 300_000 });
  await page.locator('.tfi-cell[data-layer="1"][data-proj="ffn"]').hover();
  await page.locator('.tfi-overview').screenshot({ path: join(ROOT, 'www/inspector-grid.png') });
  await page.locator('.tfi-cell[data-layer="1"][data-proj="ffn"]').click();
  await page.waitForFunction(() => document.getElementById('inspector').map?.layer === 1, null, { timeout: 300_000 });
  // The slot the first token uses most, selected as a person would: by clicking its column.
  const slot = await page.evaluate(() => {
    const i = document.getElementById('inspector');
    const s = i.mapSummary(1, 'ffn');
    return s.top[0];
  });
  const box = await page.locator('.tfi-map').boundingBox();
  await page.mouse.move(box.x + ((slot + 0.5) / 512) * box.width, box.y + 4);
  await page.mouse.click(box.x + ((slot + 0.5) / 512) * box.width, box.y + 4);
  await page.waitForSelector('.tfi-dictionary li', { timeout: 60_000 });
  await page.locator('.tfi-canvas-box').screenshot({ path: join(ROOT, 'www/inspector-map.png') });
  await page.locator('.tfi-text').evaluate((e) => e.scrollIntoView());
  const panel = page.locator('.tfi-map-panel');
  const top = await page.locator('.tfi-hover').boundingBox();
  const bottom = await page.locator('.tfi-exports').boundingBox();
  const panelBox = await panel.boundingBox();
  await page.screenshot({ path: join(ROOT, 'www/inspector-dictionary.png'), clip: { x: panelBox.x, y: top.y, width: panelBox.width, height: bottom.y + bottom.height - top.y } });

  // Knocking out the parameter token the last token uses most in layer 1's FFN, and its effect on the
  // next token.
  await page.evaluate(() => {
    const i = document.getElementById('inspector');
    const s = i.mapSummary(1, 'ffn');
    return i.selectSlot(s.top[(i.summary.tokens - 1) * s.k]);
  });
  await page.locator('.tfi-slot .tfi-knock-out').click();
  await page.waitForFunction(() => document.querySelectorAll('.tfi-bars-with .tfi-bar').length === 10, null, { timeout: 300_000 });
  const actions = page.locator('.tfi-actions');
  await actions.evaluate((e) => e.scrollIntoView());
  const area = await actions.boundingBox();
  const next = await page.locator('.tfi-next').boundingBox();
  await page.screenshot({ path: join(ROOT, 'www/inspector-intervention.png'), clip: { x: area.x, y: area.y, width: area.width, height: next.y + next.height - area.y + 8 } });
} finally {
  await browser.close();
  server.close();
}
