// Writes the README's screenshot (www/screenshot.png): the page on WebGPU after a sampled generation
// with the page's default settings. Run: node tests/browser/screenshot.mjs
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
} finally {
  await browser.close();
  server.close();
}
