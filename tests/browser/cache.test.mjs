// node --test: models loaded by URL are kept between visits (OPFS). A fixture in the authors'
// layout is served by `cargo xtask serve` on another port, like a hub. After one load the page,
// reloaded with that server stopped, loads the model from the cache; a corrupted cache entry is
// refused, deleted and downloaded again (never run), and so is one whose file changed on the server
// (another ETag); `?model=URL` loads it on opening the page; deleting the entry frees it; with the
// quota full the model loads uncached, with a notice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, launch, hubServer, ROOT } from './harness.mjs';
import { openPage, waitLoaded, setGreedy, generate, nativeGreedy, loadUrl } from './pages.mjs';

const FIXTURE = join(ROOT, 'tests', 'fixtures', 'l2_norm_gelu');
// Served from a copy, so the test can change the file under the server.
const SERVED = mkdtempSync(join(tmpdir(), 'tokenformer-cache-test-'));
cpSync(FIXTURE, SERVED, { recursive: true });

/** The names in the cache's OPFS folder. */
const cacheFolders = (page) => page.evaluate(async () => {
  const names = [];
  try {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('tokenformer-cache');
    for await (const [name] of dir.entries()) names.push(name);
  } catch { /* no cache folder */ }
  return names;
});

test('a model loaded by URL is cached, checked, reloaded offline and deleted', { timeout: 600_000 }, async (t) => {
  const expected = nativeGreedy('The sea was', 6, FIXTURE).ids;
  let model = await hubServer(SERVED);
  const { url, port } = model;
  const server = await serve();
  const browser = await launch({ webgpu: false });
  try {
    const { page, errors } = await openPage(browser.context, server);
    await waitLoaded(page, 'tokenformer-moby');
    await setGreedy(page, 6);

    await t.test('the first load downloads and caches', async () => {
      const { line, kind } = await loadUrl(page, url);
      assert.notEqual(kind, 'error');
      assert.match(line, /cached for the next visit/);
      assert.deepEqual((await generate(page, 'The sea was')).ids, expected);
      await page.locator('#cache-panel summary').click();
      await page.waitForFunction(() => document.getElementById('cache-list').dataset.count === '1');
      assert.match(await page.locator('#cache-list').textContent(), /pytorch_model\.bin/);
    });

    await t.test('with the server stopped, a reloaded page loads it from the cache', async () => {
      await model.close();
      await page.reload();
      await waitLoaded(page, 'tokenformer-moby');
      await setGreedy(page, 6);
      const { line, kind, notice } = await loadUrl(page, url);
      assert.notEqual(kind, 'error', notice);
      assert.match(line, /from the cache/);
      assert.deepEqual((await generate(page, 'The sea was')).ids, expected);
    });

    await t.test('a corrupted cache entry is refused and downloaded again', async () => {
      await page.evaluate(async () => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('tokenformer-cache');
        for await (const [, entry] of dir.entries()) {
          const handle = await entry.getFileHandle('weights');
          const size = (await handle.getFile()).size;
          const writable = await handle.createWritable({ keepExistingData: true });
          await writable.write({ type: 'write', position: Math.floor(size / 2), data: new Uint8Array(64).fill(0x55) });
          await writable.close();
        }
      });
      model = await hubServer(SERVED, port);
      const { line, kind, notice } = await loadUrl(page, url);
      assert.notEqual(kind, 'error', notice);
      assert.match(notice ?? '', /cached copy was damaged .* downloaded again/);
      assert.match(line, /cached for the next visit/);
      assert.deepEqual((await generate(page, 'The sea was')).ids, expected);
    });

    await t.test('a model that changed on its server is downloaded again', async () => {
      // A new modification time gives the file another ETag.
      const later = new Date(Date.now() + 60_000);
      utimesSync(join(SERVED, 'pytorch_model.bin'), later, later);
      const { line, kind, notice } = await loadUrl(page, url);
      assert.notEqual(kind, 'error', notice);
      assert.match(notice ?? '', /changed on its server/);
      assert.match(line, /cached for the next visit/);
      const again = await loadUrl(page, url);
      assert.match(again.line, /from the cache/);
    });

    await t.test('?model=URL in the page\'s address loads that model (here from the cache)', async () => {
      const other = await browser.context.newPage();
      await other.goto(`${server.url}/index.html?model=${encodeURIComponent(url)}`);
      await other.waitForFunction((u) => document.body.dataset.model === u, url, { timeout: 120_000 });
      assert.match(await other.locator('#load-text').textContent(), /from the cache/);
      await other.close();
    });

    await t.test('deleting it from the page frees the storage', async () => {
      assert.equal((await cacheFolders(page)).length, 1);
      await page.waitForFunction(() => document.getElementById('cache-list').dataset.count === '1');
      await page.evaluate(() => { document.getElementById('cache-panel').open = true; });
      await page.getByRole('button', { name: `Delete the cached copy of ${url}` }).click();
      await page.waitForFunction(() => document.getElementById('cache-list').dataset.count === '0');
      assert.deepEqual(await cacheFolders(page), []);
    });

    await t.test('with the storage quota full, the model loads uncached and says so', async () => {
      const cdp = await browser.context.newCDPSession(page);
      // Room for config.json and tokenizer.json, not for the weights: the copy fails mid-download.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 20_000 });
      try {
        const { line, kind, notice } = await loadUrl(page, url);
        assert.notEqual(kind, 'error', notice);
        assert.match(notice ?? '', /not cached: .*quota/);
        assert.doesNotMatch(line, /cached/);
        assert.deepEqual((await generate(page, 'The sea was')).ids, expected);
        assert.deepEqual(await cacheFolders(page), []);
      } finally {
        await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url });
      }
    });

    assert.deepEqual(errors.filter((e) => !/ERR_|Failed to load resource/.test(e)), []);
  } finally {
    await browser.close();
    server.close();
    await model.close();
    rmSync(SERVED, { recursive: true, force: true });
  }
});
