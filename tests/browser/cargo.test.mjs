// node --test: the tests find the binaries where cargo builds them, also when CARGO_TARGET_DIR
// points elsewhere (a shared machine's or a CI cache's target folder): the browser harness's lookup
// of the xtask binary, run against a stand-in xtask in such a folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Set before the first lookup: cargo is asked once per process.
const target = mkdtempSync(join(tmpdir(), 'tokenformer-target-'));
process.env.CARGO_TARGET_DIR = target;
const { binary, targetDir } = await import('./cargo.mjs');
const { hubServer } = await import('./harness.mjs');

test.after(() => rmSync(target, { recursive: true, force: true }));

test('the target directory is where CARGO_TARGET_DIR points', () => {
  assert.equal(targetDir(), target);
  assert.equal(binary('tokenformer', 'release'), join(target, 'release', 'tokenformer'));
});

test('the hub server runs the xtask binary from CARGO_TARGET_DIR', async () => {
  // A stand-in xtask: it records its arguments, says it is listening, then waits to be stopped.
  const served = join(target, 'served');
  mkdirSync(join(target, 'debug'), { recursive: true });
  writeFileSync(join(target, 'debug', 'xtask'), `#!/bin/sh\necho "$@" > '${served}'\necho listening\nexec sleep 60\n`);
  chmodSync(join(target, 'debug', 'xtask'), 0o755);
  const hub = await hubServer('/a/model/folder');
  try {
    assert.equal(readFileSync(served, 'utf8').trim(), 'serve /a/model/folder');
  } finally {
    await hub.close();
  }
});
