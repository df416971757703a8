// What the page tests share: the native CLI to compare with, and driving the page as a person does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './harness.mjs';

const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
export const BIN = process.env.TOKENFORMER_BIN ?? join(TARGET, 'debug', 'tokenformer');
export const ARTIFACTS = join(TARGET, 'browser-artifacts');
export const PAGE_CSP = readFileSync(join(ROOT, 'index.html'), 'utf8').match(/http-equiv="Content-Security-Policy" content="([^"]*)"/)?.[1];

/** Runs the native `tokenformer` CLI and parses its JSON output. */
export function tokenformer(args) {
  assert.ok(existsSync(BIN), `${BIN} is missing: build it with cargo build (cargo xtask test does)`);
  return JSON.parse(execFileSync(BIN, args, { encoding: 'utf8', maxBuffer: 1 << 28 }));
}

/** Greedy continuation from the native CPU backend: { ids, text }. */
export function nativeGreedy(prompt, maxTokens, model) {
  const args = ['generate', '--prompt', prompt, '--temperature', '0', '--max-tokens', String(maxTokens), '--json'];
  if (model) args.push('--model', model);
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
