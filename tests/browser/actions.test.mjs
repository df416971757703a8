// node --test: acting on what the inspector shows, on the demo page in headless Chromium, as a person
// would, against the native CPU backend (`tokenformer logits --intervene`, `search`, `inspect
// --logit-lens`, `generate --intervene`): open a slot, knock it out, see the next-token bars change as
// the CLI says (one forward pass); reload from the shared link and find the interventions active;
// search a token and find the slot the CLI ranks first; the logit lens; the texts without and with, side by side.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { serve, launch } from './harness.mjs';
import { ARTIFACTS, PAGE_CSP, tokenformer, openPage, waitLoaded, setGreedy } from './pages.mjs';

const PROMPT = 'Call me Ishmael. Some years ago, never mind how long';
const LAYER = 2;
const PROJ = 'ffn';
const SEARCHED = ' whale';
const TOLERANCE = 1e-3;

let server;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await serve({ csp: PAGE_CSP });
});
after(() => server.close());

/** The top `k` of softmax(row) as [id, probability], most likely first (ties by lower id). */
function topProbabilities(row, k) {
  const max = Math.max(...row);
  const z = row.reduce((s, v) => s + Math.exp(v - max), 0);
  return row.map((v, id) => [id, Math.exp(v - max) / z]).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k);
}

/** The bars of one side ('without' | 'with') as [id, probability]. */
const bars = (page, side) => page.locator(`.tfi-bars-${side} .tfi-bar`).evaluateAll((rows) =>
  rows.map((r) => [Number(r.dataset.id), Number(r.dataset.prob)]));

/** Bars against the CLI's distribution: equal probabilities, equal ids where not near a tie. */
function assertSameDistribution(shown, want, what) {
  assert.equal(shown.length, want.length, what);
  shown.forEach(([id, p], i) => {
    assert.ok(Math.abs(p - want[i][1]) < TOLERANCE, `${what} rank ${i}: ${JSON.stringify(shown)} vs ${JSON.stringify(want)}`);
    const tie = want.some(([, q], j) => j !== i && Math.abs(q - want[i][1]) < TOLERANCE);
    if (!tie) assert.equal(id, want[i][0], `${what} rank ${i}`);
  });
}

async function inspectPrompt(page) {
  await page.getByLabel('Prompt').fill(PROMPT);
  await page.getByRole('button', { name: 'Inspect prompt and output' }).click();
  await page.waitForFunction(() => document.querySelectorAll('.tfi-bars-without .tfi-bar').length === 10, null, { timeout: 120_000 });
}

for (const mode of ['webgpu', 'no-webgpu']) {
  test(`acting on the inspector (${mode})`, async (t) => {
    const browser = await launch({ webgpu: mode === 'webgpu' });
    try {
      const { page, errors } = await openPage(browser.context, server);
      await page.setViewportSize({ width: 1280, height: 1600 });
      await waitLoaded(page, 'tokenformer-moby');
      const ids = tokenformer(['inspect', '--prompt', PROMPT, '--layer', String(LAYER), '--proj', PROJ, '--top-k', '1', '--json']);
      // The slot the last token uses most: knocking it out moves the next-token distribution.
      const slot = ids.top.at(-1)[0][0];
      const spec = `${LAYER}:${PROJ}:${slot}=0`;
      const promptIds = await page.evaluate((p) => document.getElementById('inspector').client.encode(p), PROMPT);
      const cli = (extra) => topProbabilities(tokenformer(['logits', '--ids', promptIds.join(','), ...extra]).logits.at(-1), 10);

      await t.test('knocking out a slot changes the next-token bars as the CLI says, in one forward pass', async () => {
        await inspectPrompt(page);
        assertSameDistribution(await bars(page, 'without'), cli([]), 'without');
        await page.locator(`.tfi-cell[data-layer="${LAYER}"][data-proj="${PROJ}"]`).click();
        await page.waitForFunction(([l, p]) => document.getElementById('inspector').map?.layer === l
          && document.getElementById('inspector').map?.proj === p, [LAYER, PROJ], { timeout: 120_000 });
        await page.locator('.tfi-map').scrollIntoViewIfNeeded();
        const box = await page.locator('.tfi-map').boundingBox();
        const slots = await page.evaluate(() => document.getElementById('inspector').map.slots);
        await page.mouse.click(box.x + ((slot + 0.5) / slots) * box.width, box.y + 3);
        await page.waitForFunction((s) => document.getElementById('inspector').selectedSlot === s, slot);
        const before = await page.evaluate(() => document.getElementById('inspector').client.passes());
        await page.locator('.tfi-slot .tfi-knock-out').click();
        await page.waitForFunction(() => document.querySelectorAll('.tfi-bars-with .tfi-bar').length === 10, null, { timeout: 120_000 });
        const after = await page.evaluate(() => document.getElementById('inspector').client.passes());
        assert.equal(after - before, 1, 'setting an intervention and redrawing took one forward pass');
        const shown = await bars(page, 'with');
        assertSameDistribution(shown, cli(['--intervene', spec]), 'with the slot knocked out');
        const without = await bars(page, 'without');
        assert.ok(shown.some(([id, p], i) => id !== without[i][0] || Math.abs(p - without[i][1]) > 10 * TOLERANCE), 'the bars changed');
        assert.equal(await page.locator(`.tfi-chip[data-intervention="${spec}"]`).count(), 1);
        assert.match(await page.evaluate(() => location.hash), new RegExp(`intervene=${spec.replaceAll('.', '\\.')}`));
        await page.screenshot({ path: join(ARTIFACTS, `actions-${mode}.png`), fullPage: true });
      });

      await t.test('the shared link brings the same interventions back', async () => {
        await page.reload();
        await waitLoaded(page, 'tokenformer-moby');
        await page.waitForFunction((s) => document.querySelector(`.tfi-chip[data-intervention="${s}"]`), spec, { timeout: 60_000 });
        const set = await page.evaluate(() => document.getElementById('inspector').interventions);
        assert.deepEqual(set, [{ layer: LAYER, proj: PROJ, slot, factor: 0 }]);
        // Active in the engine: the distribution after inspecting is the CLI's with the intervention.
        await inspectPrompt(page);
        await page.waitForFunction(() => document.querySelectorAll('.tfi-bars-with .tfi-bar').length === 10, null, { timeout: 120_000 });
        assertSameDistribution(await bars(page, 'with'), cli(['--intervene', spec]), 'after the reload');
      });

      await t.test('search finds the slot the CLI ranks first, and opens it', async () => {
        const want = tokenformer(['search', '--token', SEARCHED, '--json']);
        await page.locator('.tfi-search-input').fill(SEARCHED);
        await page.getByRole('button', { name: 'Search' }).click();
        await page.waitForFunction(() => document.querySelectorAll('.tfi-hits li').length === 20, null, { timeout: 120_000 });
        const hits = await page.locator('.tfi-hits li').evaluateAll((items) =>
          items.map((li) => [Number(li.dataset.layer), li.dataset.proj, Number(li.dataset.slot), Number(li.dataset.score)]));
        assert.deepEqual(hits[0].slice(0, 3), want.top[0].slice(0, 3));
        hits.forEach((h, i) => assert.ok(Math.abs(h[3] - want.top[i][3]) < TOLERANCE, `hit ${i}: ${h} vs ${want.top[i]}`));
        await page.locator('.tfi-hits li').first().getByRole('button', { name: 'Open' }).click();
        const [layer, proj, s] = want.top[0];
        await page.waitForFunction(([l, p, x]) => {
          const i = document.getElementById('inspector');
          return i.map?.layer === l && i.map?.proj === p && i.selectedSlot === x;
        }, [layer, proj, s], { timeout: 120_000 });
      });

      await t.test('the logit lens equals the CLI, and its last block is the prediction', async () => {
        await page.getByRole('button', { name: 'Show the logit lens' }).click();
        await page.waitForSelector('.tfi-lens td', { timeout: 120_000 });
        const cells = await page.locator('.tfi-lens td').evaluateAll((tds) =>
          tds.map((td) => [Number(td.dataset.layer), Number(td.dataset.token), Number(td.dataset.id), Number(td.dataset.prob)]));
        const want = tokenformer(['inspect', '--prompt', PROMPT, '--logit-lens', '--intervene', spec, '--json']).lens;
        assert.equal(cells.length, want.length * want[0].length);
        for (const [layer, token, id, p] of cells) {
          const top = want[layer][token];
          assert.ok(Math.abs(p - top[0][1]) < TOLERANCE, `block ${layer} token ${token}: ${p} vs ${top[0]}`);
          if (Math.abs(top[0][1] - top[1][1]) > TOLERANCE) assert.equal(id, top[0][0], `block ${layer} token ${token}`);
        }
        const last = cells.filter(([layer, token]) => layer === want.length - 1 && token === want[0].length - 1)[0];
        assert.equal(last[2], (await bars(page, 'with'))[0][0], 'the last block predicts what the bars show');
      });

      await t.test('compare shows the texts without and with the interventions', async () => {
        await setGreedy(page, 6);
        await page.getByRole('button', { name: 'Compare without / with interventions' }).click();
        await page.waitForFunction(() => document.getElementById('compare').dataset.done, null, { timeout: 120_000 });
        const got = await page.evaluate(() => ['without', 'with'].map((k) => document.getElementById(`compare-${k}`).dataset.ids.split(',').map(Number)));
        const greedy = (extra) => tokenformer(['generate', '--prompt', PROMPT, '--temperature', '0', '--max-tokens', '6', '--json', ...extra]).ids;
        assert.deepEqual(got, [greedy([]), greedy(['--intervene', spec])]);
      });

      await t.test('the page stays clean', async () => {
        assert.deepEqual(errors, []);
        assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], 'Content-Security-Policy violations');
      });
    } finally {
      await browser.close();
    }
  });
}
