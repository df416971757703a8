// node --test: the Pattention inspector on the demo page, in headless Chromium, against the native
// CPU backend (`tokenformer inspect` / `tokenformer dictionary`): on WebGPU (whose summaries are
// reduced on the device) and on the CPU fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { serve, launch, ROOT } from './harness.mjs';
import { ARTIFACTS, BIN, PAGE_CSP, tokenformer, nativeGreedy, openPage, waitLoaded, setGreedy, generate, inspectLongPrompt, frameReport } from './pages.mjs';

const PROMPT = 'Call me Ishmael. Some years ago, never mind how long';
const LAYER = 2;
const PROJ = 'ffn';
const K = 8; // the inspector's default top-k
const TOLERANCE = 1e-3;

let server;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await serve({ csp: PAGE_CSP });
});
after(() => server.close());

const cli = (args) => tokenformer(['inspect', '--prompt', PROMPT, '--layer', String(LAYER), '--proj', PROJ, '--json', ...args]);

/** Max |a - b| over two equally long number lists. */
function maxError(a, b) {
  assert.equal(a.length, b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

async function inspectPrompt(page) {
  await page.getByLabel('Prompt').fill(PROMPT);
  await page.getByRole('button', { name: 'Inspect prompt and output' }).click();
  await page.waitForFunction(() => document.querySelectorAll('.tfi-cell').length > 0 && document.querySelector('.tfi-status').textContent.includes('tokens'), null, { timeout: 120_000 });
}

async function openMap(page, layer, proj) {
  await page.locator(`.tfi-cell[data-layer="${layer}"][data-proj="${proj}"]`).click();
  await page.waitForFunction(([l, p]) => {
    const m = document.getElementById('inspector').map;
    return m && m.layer === l && m.proj === p && !document.querySelector('.tfi-map-panel').hidden;
  }, [layer, proj], { timeout: 120_000 });
}

async function download(page, button) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.locator(button).click()]);
  return { name: file.suggestedFilename(), bytes: readFileSync(await file.path()) };
}

for (const mode of ['webgpu', 'no-webgpu']) {
  test(`inspector (${mode})`, async (t) => {
    const browser = await launch({ webgpu: mode === 'webgpu' });
    try {
      const { page, errors, foreign } = await openPage(browser.context, server);
      await page.setViewportSize({ width: 1280, height: 1400 });
      await waitLoaded(page, 'tokenformer-moby');
      const weights = cli([]).weights;
      const top = cli(['--top-k', String(K)]).top;
      const tokens = weights.length;

      await t.test('the grid shows every layer x projection of the default model', async () => {
        await inspectPrompt(page);
        const cells = await page.locator('.tfi-cell').count();
        assert.equal(cells, 4 * 5);
        // Each thumbnail drew something (not a blank canvas).
        const drawn = await page.evaluate(() => [...document.querySelectorAll('.tfi-cell canvas')].map((c) => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          return d.some((v, i) => i % 4 !== 3 && v < 250);
        }));
        assert.ok(drawn.every(Boolean), `blank thumbnails: ${drawn}`);
        assert.match(await page.locator('.tfi-status').textContent(), new RegExp(`^${tokens} tokens`));
        await page.locator('.tfi-cell[data-layer="1"][data-proj="query"]').hover();
        assert.match(await page.locator('.tfi-preview').textContent(), /layer 1 query/);
      });

      await t.test("a token's top-k parameter tokens equal the CPU backend's", async () => {
        await openMap(page, LAYER, PROJ);
        for (const token of [0, 3, tokens - 1]) {
          await page.locator(`.tfi-token[data-token="${token}"]`).hover();
          const shown = await page.locator(`.tfi-top[data-token="${token}"] li`).evaluateAll((items) =>
            items.map((li) => [Number(li.dataset.slot), Number(li.dataset.value)]));
          const want = top[token];
          assert.equal(shown.length, K);
          assert.ok(maxError(shown.map((p) => p[1]), want.map((p) => p[1])) < TOLERANCE, `token ${token}: ${JSON.stringify(shown)} vs ${JSON.stringify(want)}`);
          // Slots agree wherever the CPU's values are not within the tolerance of a tie.
          want.forEach(([slot, v], i) => {
            const tie = want.some(([, w], j) => j !== i && Math.abs(w - v) < TOLERANCE);
            if (!tie) assert.equal(shown[i][0], slot, `token ${token} rank ${i}`);
          });
        }
        // The full map equals the CPU's Theta.
        const got = await page.evaluate(() => Array.from(document.getElementById('inspector').map.weights));
        assert.ok(maxError(got, weights.flat()) < TOLERANCE);
      });

      // The slot that token 0 uses most, and a threshold at half its weight (clear of any value).
      const slot = top[0][0][0];
      const column = weights.map((row) => row[slot]);
      let threshold = top[0][0][1] / 2;
      while (column.some((v) => Math.abs(v - threshold) < 10 * TOLERANCE)) threshold += 0.013;
      const users = column.flatMap((v, t) => (v > threshold ? [t] : []));

      await t.test('clicking a slot lights the tokens that use it', async () => {
        await page.evaluate((v) => { document.getElementById('inspector').threshold = v; }, threshold);
        // At zoom 1 in index order, column `slot` sits at slot / slots of the canvas width.
        const box = await page.locator('.tfi-map').boundingBox();
        await page.mouse.click(box.x + ((slot + 0.5) / weights[0].length) * box.width, box.y + 3);
        await page.waitForFunction((s) => document.getElementById('inspector').selectedSlot === s, slot);
        const lit = await page.locator('.tfi-token.uses').evaluateAll((spans) => spans.map((s) => Number(s.dataset.token)));
        assert.deepEqual(lit, users);
        assert.ok(users.includes(0));
        assert.equal(await page.locator('.tfi-users').getAttribute('data-tokens'), users.join(','));
      });

      await t.test("a slot's dictionary equals the CPU-computed top vocabulary tokens", async () => {
        await page.waitForSelector('.tfi-dictionary li', { timeout: 60_000 });
        const shown = await page.locator('.tfi-dictionary li').evaluateAll((items) =>
          items.map((li) => [Number(li.dataset.id), Number(li.dataset.score)]));
        const want = tokenformer(['dictionary', '--layer', String(LAYER), '--proj', PROJ, '--slot', String(slot), '--top-k', String(shown.length), '--json']).top;
        assert.ok(shown.length >= 10);
        assert.deepEqual(shown.map((e) => e[0]), want.map((e) => e[0]));
        assert.ok(maxError(shown.map((e) => e[1]), want.map((e) => e[1])) < TOLERANCE);
        await page.screenshot({ path: join(ARTIFACTS, `inspector-${mode}.png`), fullPage: true });
      });

      await t.test('attention per head equals the CPU backend', async () => {
        const heads = await page.locator('.tfi-head').count();
        assert.equal(heads, 4);
        const got = await page.evaluate(() => Array.from(document.getElementById('inspector').attentionMap.probs));
        const want = tokenformer(['inspect', '--prompt', PROMPT, '--layer', String(LAYER), '--attention', '--json']).attention;
        assert.ok(maxError(got, want.flat(2)) < 1e-4);
      });

      await t.test('exports download valid PNG, JSON and CSV', async () => {
        const png = await download(page, '.tfi-export-png');
        assert.equal(png.name, `tokenformer-layer${LAYER}-${PROJ}.png`);
        assert.deepEqual([...png.bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
        // IHDR: one pixel per cell.
        assert.deepEqual([png.bytes.readUInt32BE(16), png.bytes.readUInt32BE(20)], [weights[0].length, tokens]);
        const json = JSON.parse((await download(page, '.tfi-export-json')).bytes.toString('utf8'));
        assert.deepEqual([json.layer, json.proj, json.slots, json.ids.length, json.tokens.length], [LAYER, PROJ, weights[0].length, tokens, tokens]);
        assert.ok(maxError(json.weights.flat(), weights.flat()) < TOLERANCE);
        const csv = (await download(page, '.tfi-export-csv')).bytes.toString('utf8').trimEnd().split('\n');
        assert.equal(csv.length, tokens + 1);
        assert.equal(csv[0].split(',').length, 3 + weights[0].length);
        const lastRow = csv[tokens].split(',');
        assert.ok(maxError(lastRow.slice(-weights[0].length).map(Number), weights[tokens - 1]) < TOLERANCE);
      });

      await t.test('the map follows a generation live and the generated text is unchanged', async () => {
        await setGreedy(page, 6);
        const got = await generate(page, PROMPT);
        assert.deepEqual(got.ids, nativeGreedy(PROMPT, 6).ids);
        // After the run, the grid and the open map cover the prompt and the generated tokens.
        await page.waitForFunction((n) => {
          const i = document.getElementById('inspector');
          return i.summary?.tokens === n && i.map?.tokens === n && !i.busy;
        }, tokens + got.ids.length, { timeout: 120_000 });
      });

      await t.test('zooming and panning the map redraw quickly (frame time)', async () => {
        const frames = await page.evaluate(async () => {
          const i = document.getElementById('inspector');
          const canvas = i.ui.canvas;
          const r = canvas.getBoundingClientRect();
          i.frameTimes.length = 0;
          for (let n = 0; n < 20; n++) {
            canvas.dispatchEvent(new WheelEvent('wheel', { deltaY: n < 10 ? -100 : 100, clientX: r.left + r.width / 2, clientY: r.top + 5, bubbles: true, cancelable: true }));
            await new Promise(requestAnimationFrame);
          }
          return i.frameTimes.slice();
        });
        assert.equal(frames.length, 20);
        const sorted = frames.slice().sort((a, b) => a - b);
        console.log(`inspector (${mode}): ${tokens} tokens x ${weights[0].length} slots, redraw median ${sorted[10].toFixed(2)} ms, max ${sorted[19].toFixed(2)} ms`);
      });

      await t.test('the page stays clean', async () => {
        assert.deepEqual(errors, []);
        assert.deepEqual(foreign, [], 'requests to other origins');
        assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], 'Content-Security-Policy violations');
      });
    } finally {
      await browser.close();
    }
  });
}

// The scale: a 150M-shaped model (random weights, the released shape: 12 layers, FFN maps
// of 3072 parameter tokens) and a 256-token prompt, on the CPU backend (SwiftShader's WebGPU would
// take minutes per forward pass). Frame times are printed, not asserted.
test('inspector on a 150M-shaped model with a 256-token prompt', async () => {
  const dir = join(ARTIFACTS, '..', 'synthetic-150m');
  if (!existsSync(join(dir, 'model.safetensors'))) {
    execFileSync(BIN, ['synthetic', '--size', '150m', '--tokenizer', join(ROOT, 'models/gpt-neox-20b/tokenizer.json'), dir], { stdio: 'inherit' });
  }
  const browser = await launch({ webgpu: false });
  try {
    const { page, errors } = await openPage(browser.context, server);
    await page.setViewportSize({ width: 1280, height: 1400 });
    await waitLoaded(page, 'tokenformer-moby');
    await page.locator('#model-files').setInputFiles(['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(dir, f)));
    await waitLoaded(page, 'model.safetensors');
    const result = await inspectLongPrompt(page, 256);
    assert.deepEqual([result.tokens, result.mapTokens, result.slots], [256, 256, 3072]);
    assert.equal(await page.locator('.tfi-cell').count(), 12 * 5);
    assert.equal(result.zoom.frames.length, 30);
    console.log(`inspector, 150M-shaped model, CPU backend, 256 tokens x 3072 slots:\n${frameReport(result)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-150m.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
