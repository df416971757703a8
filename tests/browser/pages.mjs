// What the page tests share: the native CLI to compare with, and driving the page as a person does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './harness.mjs';
import { binary, targetDir } from './cargo.mjs';

export const BIN = process.env.TOKENFORMER_BIN ?? binary('tokenformer');
export const ARTIFACTS = join(targetDir(), 'browser-artifacts');
export const PAGE_CSP = readFileSync(join(ROOT, 'index.html'), 'utf8').match(/http-equiv="Content-Security-Policy" content="([^"]*)"/)?.[1];

/** Runs the native `tokenformer` CLI and parses its JSON output. */
export function tokenformer(args) {
  assert.ok(existsSync(BIN), `${BIN} is missing: build it with cargo build (cargo xtask test does)`);
  return JSON.parse(execFileSync(BIN, args, { encoding: 'utf8', maxBuffer: 1 << 28 }));
}

/** Greedy continuation from the native CPU backend: { ids, text }. */
export function nativeGreedy(prompt, maxTokens, model, dtype, kvCache) {
  const args = ['generate', '--prompt', prompt, '--temperature', '0', '--max-tokens', String(maxTokens), '--json'];
  if (model) args.push('--model', model);
  if (dtype) args.push('--dtype', dtype);
  if (kvCache) args.push('--kv-cache', kvCache);
  return tokenformer(args);
}

/** Opens the page; returns it with the console errors and foreign requests seen so far (worker
 *  included), and records Content-Security-Policy violations in `window.__cspViolations`. */
export async function openPage(context, server) {
  const page = await context.newPage();
  const errors = [];
  const foreign = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // Everything, worker fetches included, must come from the page's own server.
  context.on('request', (r) => { if (!r.url().startsWith(server.url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreign.push(r.url()); });
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  await page.goto(`${server.url}/index.html`);
  return { page, errors, foreign };
}

export async function waitLoaded(page, name) {
  await page.waitForFunction((n) => document.body.dataset.model === n, name, { timeout: 120_000 });
}

/** A new page of `context` with the built-in model loaded, then `backend` and `dtype` chosen (for
 *  the measurement scripts, which load their model next). */
export async function pageWith(context, server, backend, dtype) {
  const page = await context.newPage();
  await page.goto(`${server.url}/index.html`);
  await waitLoaded(page, 'tokenformer-moby');
  await page.selectOption('#backend', backend);
  await page.selectOption('#dtype', dtype);
  return page;
}

/** Loads `url` through the page's URL field, with `backend` and `dtype` chosen when given;
 *  `beforeClick` runs just before Load is clicked (to start a measurement). Resolves, once the
 *  model loaded or an error shows, to the load line, the notice (null when hidden) and its kind. */
export async function loadUrl(page, url, { backend, dtype, timeout = 120_000, beforeClick } = {}) {
  if (backend) await page.selectOption('#backend', backend);
  if (dtype) await page.selectOption('#dtype', dtype);
  await page.locator('input[name=source][value=url]').check();
  await page.locator('#model-url').fill(url);
  await page.evaluate(() => { delete document.body.dataset.model; document.getElementById('notice').hidden = true; });
  beforeClick?.();
  await page.getByRole('button', { name: 'Load model' }).click();
  await page.waitForFunction(() => document.body.dataset.model
    || (document.getElementById('notice').className === 'error' && !document.getElementById('notice').hidden), null, { timeout });
  return page.evaluate(() => ({
    line: document.getElementById('load-text').textContent,
    notice: document.getElementById('notice').hidden ? null : document.getElementById('notice-text').textContent,
    kind: document.getElementById('notice').className,
  }));
}

export async function setGreedy(page, maxTokens) {
  await page.getByLabel('Temperature').fill('0');
  await page.getByLabel('Repetition penalty').fill('1');
  await page.getByLabel('Max tokens').fill(String(maxTokens));
}

/** Types `prompt`, clicks Generate and waits for the end: { ids, text, done }. */
export async function generate(page, prompt) {
  await page.getByLabel('Prompt').fill(prompt);
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.waitForFunction(() => document.getElementById('output').dataset.done, null, { timeout: 120_000 });
  return page.evaluate(() => {
    const out = document.getElementById('output');
    return { ids: out.dataset.ids ? out.dataset.ids.split(',').map(Number) : [], text: out.querySelector('.generated').textContent, done: out.dataset.done };
  });
}

/** On a loaded page: inspects a prompt of exactly `tokens` ids through the inspector element,
 *  opens layer 0's FFN map, then zooms, pans and re-thresholds it, timing every frame. */
export function inspectLongPrompt(page, tokens) {
  return page.evaluate(async (n) => {
    const i = document.getElementById('inspector');
    const text = 'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse. ';
    const ids = (await i.client.encode(text.repeat(Math.ceil(n / 10)))).slice(0, n);
    let t = performance.now();
    await i.inspect(ids);
    const grid = performance.now() - t;
    t = performance.now();
    await i.openMap(0, 'ffn');
    const open = performance.now() - t;
    const canvas = i.ui.canvas;
    const r = canvas.getBoundingClientRect();
    // Frame time as the page sees it: from one animation frame to the next while the map redraws;
    // `redraw` is the inspector's own drawing time within those frames.
    const frames = async (action, count) => {
      // Let the page paint what opening the map added first: that paint is not an interaction.
      await new Promise(requestAnimationFrame);
      i.frameTimes.length = 0;
      const gaps = [];
      let last = await new Promise(requestAnimationFrame);
      for (let k = 0; k < count; k++) {
        action(k);
        const now = await new Promise(requestAnimationFrame);
        gaps.push(now - last);
        last = now;
      }
      return { frames: gaps, redraw: i.frameTimes.slice() };
    };
    const zoom = await frames((k) => canvas.dispatchEvent(new WheelEvent('wheel', {
      deltaY: k < 15 ? -100 : 100, clientX: r.left + r.width / 3, clientY: r.top + r.height / 2, bubbles: true, cancelable: true,
    })), 30);
    const pan = await frames((k) => {
      canvas.dispatchEvent(new MouseEvent('mousedown', { clientX: r.left + 200, clientY: r.top + 50, bubbles: true }));
      canvas.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + 200 + (k % 2 ? 40 : -40), clientY: r.top + 50, buttons: 1, bubbles: true }));
      window.dispatchEvent(new MouseEvent('mouseup'));
    }, 30);
    const maxT = Number(i.ui.threshold.max);
    const threshold = await frames((k) => { i.threshold = (k / 10) * maxT * 0.5; }, 10);
    return { tokens: ids.length, slots: i.map.slots, mapTokens: i.map.tokens, grid, open, zoom, pan, threshold };
  }, tokens);
}

/** One line per interaction of an `inspectLongPrompt` result. */
export function frameReport(result) {
  const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const max = (xs) => Math.max(...xs);
  const lines = [`  grid (every map, top-k + column sums): ${(result.grid / 1000).toFixed(2)} s; open one map (+ attention): ${(result.open / 1000).toFixed(2)} s`];
  for (const kind of ['zoom', 'pan', 'threshold']) {
    const { frames, redraw } = result[kind];
    lines.push(`  ${kind}: frame time median ${median(frames).toFixed(1)} ms, max ${max(frames).toFixed(1)} ms; redraw median ${median(redraw).toFixed(1)} ms, max ${max(redraw).toFixed(1)} ms`);
  }
  return lines.join('\n');
}
