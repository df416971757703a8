// Serves the repository on 127.0.0.1 and drives the system Chromium with WebGPU (SwiftShader).
import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';
import { binary } from './cargo.mjs';

export const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), '..', '..'));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.css': 'text/css',
  '.png': 'image/png',
};

/** A static file server over `root` (the repository by default), on a free loopback port; `csp`,
 * if given, is sent as the Content-Security-Policy header of every response (so workers run under
 * it too). A folder's URL serves its index.html. `Range: bytes=N-` is answered with 206.
 * `drops` maps a URL path to { after, times }: its first `times` full responses are cut off after
 * `after` bytes (the connection is destroyed), as a failing network does. `requests` logs every
 * request as { method, path, range }. */
export async function serve({ csp, root = ROOT, drops = {} } = {}) {
  const requests = [];
  const server = createServer(async (req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let path = normalize(join(root, urlPath));
    if (path.endsWith('/')) path += 'index.html';
    if (!path.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    const range = req.headers.range;
    requests.push({ method: req.method, path: urlPath, range });
    let body;
    try {
      body = await readFile(path);
    } catch {
      res.writeHead(404).end('not found');
      return;
    }
    const headers = { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream', 'accept-ranges': 'bytes' };
    if (csp) headers['content-security-policy'] = csp;
    const from = Number(/^bytes=(\d+)-$/.exec(range ?? '')?.[1] ?? 0);
    if (from >= body.length && range) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    const part = body.subarray(from);
    headers['content-length'] = part.length;
    if (range) headers['content-range'] = `bytes ${from}-${body.length - 1}/${body.length}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const drop = drops[urlPath];
    if (drop && drop.times > 0 && part.length > drop.after) {
      drop.times--;
      // Flush a part of the body, then cut the connection mid-response.
      res.write(part.subarray(0, drop.after), () => setTimeout(() => res.destroy(), 50));
      return;
    }
    res.end(part);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, requests, close: () => server.close() };
}

/** Headless Chromium from Debian with WebGPU on SwiftShader (the flags docs/testing.md describes), or
 * with WebGPU switched off to exercise the CPU fallback. */
export async function launch({ webgpu = true } = {}) {
  const gpuFlags = webgpu ? ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'] : ['--disable-webgpu'];
  const profile = await mkdtemp(join(tmpdir(), 'tokenformer-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      ...gpuFlags,
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  return { context, close: async () => { await context.close(); await rm(profile, { recursive: true, force: true }); } };
}

/** `cargo xtask serve DIR` (streamed files, Range, CORS: a hub-like host) on `port` (default: a
 *  random free-ish one); `url` ends with '/'. */
export async function hubServer(dir, port = 20000 + Math.floor(Math.random() * 20000)) {
  const xtask = binary('xtask');
  if (!existsSync(xtask)) throw new Error(`${xtask} is missing: cargo xtask builds it`);
  const child = spawn(xtask, ['serve', dir], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => { child.stdout.once('data', resolve); child.once('exit', reject); });
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    close: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill();
    }),
  };
}

/** The summed resident set size in bytes of every process whose command line names `marker`
 *  (a browser's processes: `BROWSER_MARKER`, its profile folder's prefix). */
export function rssOf(marker) {
  return Object.values(rssByProcess(marker)).reduce((a, b) => a + b, 0);
}

// The same sum split by Chromium's process type (`--type=` on the command line; the browser
// process has none), to tell the GPU process's growth from the renderer's.
export function rssByProcess(marker) {
  const byType = {};
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      if (!cmdline.includes(marker)) continue;
      const type = /--type=([\w-]+)/.exec(cmdline)?.[1] ?? 'browser';
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? 0) * 1024;
      byType[type] = (byType[type] ?? 0) + rss;
    } catch { /* the process ended */ }
  }
  return byType;
}

export const BROWSER_MARKER = 'tokenformer-chromium-';
