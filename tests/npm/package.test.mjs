// node --test: the npm package as its users get it. `cargo xtask package` (run by `cargo xtask test`)
// builds target/npm/tokenformer-web-<version>.tgz; this installs the tarball into fresh folders, then:
// imports it in Node and generates on the CPU, type-checks a consumer against its declarations,
// builds a Vite app and serves a plain ES-module page, and generates in headless Chromium (WebGPU and
// the CPU; in a worker, and on the plain page's main thread too) under a strict CSP. Generated tokens
// are compared with the native CLI's greedy output. The Vite example's code is also bundled by webpack.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';
import { serve, launch, ROOT } from '../browser/harness.mjs';
import { ARTIFACTS, nativeGreedy } from '../browser/pages.mjs';

const TOOLS = join(ROOT, 'tests/npm/node_modules');
const TOOL_VERSIONS = JSON.parse(readFileSync(join(ROOT, 'tests/npm/package.json'), 'utf8')).dependencies;
const PACKED = join(ARTIFACTS, '..', 'npm');
/** The wasm budget: the release build with the WebGPU backend and the tokenizer, after wasm-opt. */
const WASM_BUDGET = 3 << 20;
/** The fewest f32x4.mul and f32x4.add each that a wasm built with SIMD (.cargo/config.toml) holds: the CPU
 *  kernels' dot products and axpys alone vectorise to several of each; a build without SIMD has none. */
const MIN_SIMD = 16;
const PROMPT = 'The sea was';
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'";

const tarball = () => {
  const found = readdirSync(PACKED).filter((f) => /^tokenformer-web-.*\.tgz$/.test(f));
  assert.equal(found.length, 1, `one tarball in ${PACKED} (run cargo xtask package): ${found}`);
  return join(PACKED, found[0]);
};

const temps = [];
/** A fresh folder (a copy of `example` if given) with the packed tarball installed. */
function consumer(example) {
  const dir = mkdtempSync(join(tmpdir(), 'tokenformer-consumer-'));
  temps.push(dir);
  if (example) {
    cpSync(join(ROOT, 'examples', example), dir, { recursive: true });
    // The example's build tools (vite) are the ones tests/npm installed at the same pin: dropping them
    // here keeps the install below to the tarball alone, whatever the machine's npm cache holds.
    const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    for (const [name, version] of Object.entries(manifest.devDependencies ?? {})) {
      assert.equal(TOOL_VERSIONS[name], version, `examples/${example} pins ${name} ${version}; tests/npm/package.json must pin the same`);
    }
    delete manifest.devDependencies;
    writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2));
  } else writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  // Only the tarball: it has no dependencies, so nothing is fetched and no cache is needed.
  execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--offline', tarball()], { cwd: dir, stdio: 'pipe' });
  return dir;
}

/** How often the wasm module `bytes` uses each f32x4 multiply and add, read with Binaryen (the
 *  wasm-opt that cargo xtask build-web runs, installed in tools/wasm-opt). */
async function simdCounts(bytes) {
  const { default: binaryen } = await import(join(ROOT, 'tools/wasm-opt/node_modules/binaryen/index.js'));
  const module = binaryen.readBinary(bytes);
  try {
    module.setFeatures(binaryen.Features.All);
    const counts = { 'f32x4.mul': 0, 'f32x4.add': 0 };
    for (const [op] of module.emitText().matchAll(/(?<=\()f32x4\.(?:mul|add)\b/g)) counts[op]++;
    return counts;
  } finally {
    module.dispose();
  }
}

let want;
before(() => { want = nativeGreedy(PROMPT, 16); });
after(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

test('the tarball holds what the package needs, and the wasm is within budget', () => {
  const dir = consumer();
  const pkg = join(dir, 'node_modules/tokenformer-web');
  const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'));
  for (const file of manifest.files) assert.ok(statSync(join(pkg, file)).size > 0, file);
  // Packed from the current sources: npm/ goes to the package root, the other folders keep their path.
  for (const file of manifest.files) {
    const source = join(ROOT, /^(www|pkg|models)\//.test(file) ? file : join('npm', file));
    assert.ok(readFileSync(join(pkg, file)).equals(readFileSync(source)), `${file} differs from ${source}: the tarball is stale, run cargo xtask package`);
  }
  const wasm = readFileSync(join(pkg, 'pkg/tokenformer_bg.wasm'));
  const gz = gzipSync(wasm, { level: 9 }).length;
  console.log(`wasm ${(wasm.length / 2 ** 20).toFixed(2)} MiB raw, ${(gz / 2 ** 20).toFixed(2)} MiB gzip (budget ${WASM_BUDGET / 2 ** 20} MiB raw); tarball ${(statSync(tarball()).size / 2 ** 20).toFixed(2)} MiB`);
  assert.ok(wasm.length <= WASM_BUDGET, `the wasm is ${wasm.length} bytes, over the ${WASM_BUDGET}-byte budget`);
  // No CDN and no SharedArrayBuffer anywhere in the shipped code.
  for (const file of manifest.files.filter((f) => f.endsWith('.js'))) {
    const code = readFileSync(join(pkg, file), 'utf8');
    assert.doesNotMatch(code, /unpkg\.com|jsdelivr|cdnjs|esm\.sh|skypack/i, file);
    assert.doesNotMatch(code, /(?:import|fetch)\s*\(\s*['"`]https?:/, file);
    assert.doesNotMatch(code, /SharedArrayBuffer/, file);
  }
});

test('the wasm computes with SIMD: the CPU kernels use f32x4 multiplies and adds', async () => {
  const wasm = readFileSync(join(consumer(), 'node_modules/tokenformer-web/pkg/tokenformer_bg.wasm'));
  const counts = await simdCounts(wasm);
  console.log(`wasm SIMD: ${JSON.stringify(counts)}`);
  for (const [op, n] of Object.entries(counts)) assert.ok(n >= MIN_SIMD, `${op} occurs ${n} times, fewer than ${MIN_SIMD}: is the wasm built without +simd128?`);
  // And the check can fail: a multiply-add counts as SIMD in f32x4, not in scalar f32.
  const { default: binaryen } = await import(join(ROOT, 'tools/wasm-opt/node_modules/binaryen/index.js'));
  const multiplyAdd = (type, op) => {
    const module = binaryen.parseText(`(module (func (export "f") (param ${type} ${type}) (result ${type})
      (${op}.add (local.get 0) (${op}.mul (local.get 0) (local.get 1)))))`);
    const bytes = module.emitBinary();
    module.dispose();
    return simdCounts(bytes);
  };
  assert.deepEqual(await multiplyAdd('f32', 'f32'), { 'f32x4.mul': 0, 'f32x4.add': 0 });
  assert.deepEqual(await multiplyAdd('v128', 'f32x4'), { 'f32x4.mul': 1, 'f32x4.add': 1 });
});

test('Node imports the installed package and generates with the CPU backend on the default model', () => {
  const dir = consumer();
  const script = `
    import { loadModel, generate, DEFAULT_MODEL_DIR } from 'tokenformer-web';
    const engine = await loadModel();
    const out = await generate(engine, ${JSON.stringify(PROMPT)}, { temperature: 0, max_tokens: 16 });
    console.log(JSON.stringify({ backend: engine.backend, dir: DEFAULT_MODEL_DIR, ...out }));`;
  const got = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' }));
  assert.equal(got.backend, 'cpu');
  assert.ok(got.dir.startsWith(join(dir, 'node_modules/tokenformer-web')), got.dir);
  assert.deepEqual(got.ids, want.ids);
  assert.equal(got.text, want.text);
});

test('Node loads q4 weights with an f16 KV cache and generates what the CLI does with them', () => {
  const dir = consumer();
  const script = `
    import { loadModel, generate } from 'tokenformer-web';
    const engine = await loadModel(undefined, { dtype: 'q4', kvCache: 'f16' });
    const exact = await loadModel(undefined, { dtype: 'q4' });
    const ids = engine.encode(${JSON.stringify(PROMPT)});
    const [a, b] = [await engine.logits(ids), await exact.logits(ids)];
    const moved = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
    const out = await generate(engine, ${JSON.stringify(PROMPT)}, { temperature: 0, max_tokens: 16 });
    console.log(JSON.stringify({ moved, ...out }));`;
  const got = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' }));
  // The f16 cache is in use (it rounds what it holds) and stays within the tests' bound of the f32 one.
  assert.ok(got.moved > 0 && got.moved < 2e-2, `f16 KV cache moved the logits by ${got.moved}`);
  const cli = nativeGreedy(PROMPT, 16, undefined, 'q4', 'f16');
  assert.deepEqual(got.ids, cli.ids);
  assert.equal(got.text, cli.text);
});

test('a strict TypeScript consumer type-checks against the shipped declarations', () => {
  const dir = consumer();
  cpSync(join(ROOT, 'tests/npm/consumer.ts'), join(dir, 'consumer.ts'));
  const tsconfig = {
    compilerOptions: {
      strict: true, noEmit: true, target: 'es2022', module: 'esnext', moduleResolution: 'bundler',
      // esnext.disposable: the wasm bindings declare [Symbol.dispose] (TypeScript 5.2+).
      lib: ['es2022', 'esnext.disposable', 'dom', 'dom.iterable'], types: [], skipLibCheck: false,
    },
    files: ['consumer.ts'],
  };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
  execFileSync(join(TOOLS, '.bin/tsc'), ['-p', dir], { cwd: dir, encoding: 'utf8' });
  // A Node consumer: nodenext resolution takes the "node" condition's declarations.
  cpSync(join(ROOT, 'tests/npm/consumer-node.ts'), join(dir, 'consumer-node.ts'));
  const node = { compilerOptions: { ...tsconfig.compilerOptions, module: 'nodenext', moduleResolution: 'nodenext' }, files: ['consumer-node.ts'] };
  writeFileSync(join(dir, 'tsconfig.node.json'), JSON.stringify(node));
  execFileSync(join(TOOLS, '.bin/tsc'), ['-p', join(dir, 'tsconfig.node.json')], { cwd: dir, encoding: 'utf8' });
  // And a wrong use is caught: the check can fail.
  writeFileSync(join(dir, 'consumer.ts'), "import { TokenFormerClient } from 'tokenformer-web';\nnew TokenFormerClient().generate(42);\n");
  assert.throws(() => execFileSync(join(TOOLS, '.bin/tsc'), ['-p', dir], { cwd: dir, stdio: 'pipe' }));
});

/** Opens `url` in Chromium (`webgpu` or not), waits for the example page to finish generating. */
async function runPage(url, webgpu) {
  const browser = await launch({ webgpu });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    const foreign = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript(() => document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`)));
    browser.context.on('request', (r) => { if (!r.url().startsWith(new URL(url).origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
    await page.goto(url);
    await page.waitForFunction(() => { const o = document.getElementById('output'); return o.dataset.done || o.dataset.error; }, null, { timeout: 180_000 });
    const result = await page.evaluate(() => ({ ...document.getElementById('output').dataset, status: document.getElementById('status').textContent, isolated: self.crossOriginIsolated }));
    // The inspector's cells are counted once it has inspected, which may be before or after the
    // first look.
    if (await page.locator('tokenformer-inspector').count()) {
      await page.waitForFunction(() => document.getElementById('output').dataset.inspected || document.getElementById('output').dataset.error, null, { timeout: 180_000 });
      Object.assign(result, await page.evaluate(() => ({ ...document.getElementById('output').dataset, cells: document.querySelectorAll('.tfi-cell').length })));
    }
    return { ...result, errors, foreign };
  } finally {
    await browser.close();
  }
}

for (const example of ['plain', 'vite']) {
  test(`the ${example} example built on the installed package generates in Chromium`, async (t) => {
    const dir = consumer(example);
    let root = dir;
    if (example === 'vite') {
      const { build } = await import(join(TOOLS, 'vite/dist/node/index.js'));
      await build({ root: dir, logLevel: 'warn', build: { outDir: join(dir, 'dist') } });
      root = join(dir, 'dist');
      const assets = readdirSync(join(root, 'assets'));
      assert.ok(assets.some((f) => f.endsWith('.wasm')), `the .wasm is among the built assets: ${assets}`);
      assert.ok(assets.some((f) => f.endsWith('.safetensors')), `the built-in model is among the built assets: ${assets}`);
    }
    const server = await serve({ root, csp: CSP });
    try {
      // The plain page also runs the engine on its main thread, with the .wasm passed as bytes.
      const modes = example === 'plain' ? ['worker', 'main'] : ['worker'];
      for (const [mode, webgpu] of modes.flatMap((m) => [[m, true], [m, false]])) {
        await t.test(`${webgpu ? 'WebGPU' : 'CPU (no WebGPU)'}, engine in the ${mode === 'main' ? 'main thread' : 'worker'}`, async () => {
          const got = await runPage(`${server.url}/index.html${mode === 'main' ? '?engine=main' : ''}`, webgpu);
          assert.equal(got.error, undefined, got.error);
          assert.match(got.status, webgpu ? /on webgpu/ : /on cpu/);
          if (example === 'plain') assert.match(got.status, mode === 'main' ? /main thread/ : /worker/);
          assert.deepEqual(got.ids.split(',').map(Number), want.ids);
          assert.equal(got.isolated, false, 'no COOP/COEP needed');
          if (example === 'vite') {
            assert.equal(Number(got.inspected), 3 + want.ids.length, 'the inspector element covered prompt + output');
            assert.equal(got.cells, 4 * 5);
          }
          assert.deepEqual(got.errors, []);
          assert.deepEqual(got.foreign, [], 'requests to other origins');
        });
      }
    } finally {
      server.close();
    }
    if (example === 'vite') {
      // `vite` (dev): modules from source with dependency pre-bundling, where a moved module's
      // relative asset URLs would break.
      await t.test('Vite dev server, CPU (no WebGPU)', async () => {
        const { createServer } = await import(join(TOOLS, 'vite/dist/node/index.js'));
        const dev = await createServer({ root: dir, logLevel: 'warn', server: { host: '127.0.0.1', port: 0 } });
        await dev.listen();
        try {
          const got = await runPage(new URL('index.html', dev.resolvedUrls.local[0]).href, false);
          assert.equal(got.error, undefined, got.error);
          assert.deepEqual(got.ids.split(',').map(Number), want.ids);
          assert.equal(Number(got.inspected), 3 + want.ids.length);
          assert.deepEqual(got.errors, []);
          assert.deepEqual(got.foreign, [], 'requests to other origins');
        } finally {
          await dev.close();
        }
      });
    }
  });
}

test("the Vite example's code bundled by webpack 5 generates in Chromium", async () => {
  const dir = consumer('vite');
  const webpack = createRequire(join(TOOLS, '..', 'package.json'))('webpack');
  const out = join(dir, 'webpack-dist');
  // No loaders or plugins: webpack 5 follows new Worker(new URL(...)) and new URL(asset, import.meta.url).
  const compiler = webpack({
    mode: 'production', context: dir, entry: './main.js', target: 'web', performance: { hints: false },
    output: { path: out, filename: 'main.js' }, experiments: { topLevelAwait: true },
  });
  const stats = await new Promise((resolve, reject) => compiler.run((e, s) => (e ? reject(e) : compiler.close(() => resolve(s)))));
  assert.ok(!stats.hasErrors(), stats.toString({ all: false, errors: true }));
  const assets = readdirSync(out);
  assert.ok(assets.some((f) => f.endsWith('.wasm')) && assets.some((f) => f.endsWith('.safetensors')), `the .wasm and the model are emitted: ${assets}`);
  cpSync(join(dir, 'index.html'), join(out, 'index.html'));
  const server = await serve({ root: out, csp: CSP });
  try {
    const got = await runPage(`${server.url}/index.html`, false);
    assert.equal(got.error, undefined, got.error);
    assert.match(got.status, /on cpu/);
    assert.deepEqual(got.ids.split(',').map(Number), want.ids);
    assert.equal(Number(got.inspected), 3 + want.ids.length);
    assert.deepEqual(got.errors, []);
    assert.deepEqual(got.foreign, [], 'requests to other origins');
  } finally {
    server.close();
  }
});
