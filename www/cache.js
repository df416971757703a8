// Models cached between visits in the Origin Private File System (OPFS), keyed by the URL they
// were loaded from. An entry is a folder holding config.json, tokenizer.json, `weights` (a
// safetensors copy in the dtype the backend used, written by the engine's loader as the download
// streams: the 1.5B checkpoint's 6.35 GB of f32 is kept as 3.2 GB of f16), and meta.json ({ url,
// source, sourceUrl, sourceSize, etag, dtype, size, checksum, savedAt }), written last: an entry
// without it (a load cut short, a quota error) is never used. The copy's size and CRC-32 are
// checked again on every load from the cache, so a truncated or corrupted entry is refused,
// deleted and downloaded again: never run.

const ROOT = 'tokenformer-cache';

/** OPFS, when this context has it (not in every browser, never in Node). */
async function root(create) {
  if (!globalThis.navigator?.storage?.getDirectory) return null;
  try {
    return await (await navigator.storage.getDirectory()).getDirectoryHandle(ROOT, { create });
  } catch {
    return null;
  }
}

/** A file name for a URL: FNV-1a, 64 bits, in hex (meta.json keeps the URL itself). */
function keyOf(url) {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(url)) h = BigInt.asUintN(64, (h ^ BigInt(byte)) * 0x100000001b3n);
  return h.toString(16).padStart(16, '0');
}

async function readBytes(dir, name) {
  return new Uint8Array(await (await (await dir.getFileHandle(name)).getFile()).arrayBuffer());
}

async function writeFile(dir, name, data) {
  const writable = await (await dir.getFileHandle(name, { create: true })).createWritable();
  await writable.write(data);
  await writable.close();
}

/** The complete entry for `url`: { meta, config, tokenizer, file } or null. */
export async function lookup(url) {
  const dir = await root(false);
  if (!dir) return null;
  try {
    const entry = await dir.getDirectoryHandle(keyOf(url));
    const meta = JSON.parse(new TextDecoder().decode(await readBytes(entry, 'meta.json')));
    if (meta.url !== url) return null;
    const file = await (await entry.getFileHandle('weights')).getFile();
    return { meta, config: await readBytes(entry, 'config.json'), tokenizer: await readBytes(entry, 'tokenizer.json'), file };
  } catch {
    return null;
  }
}

/** Starts an entry for `url`; null when there is no OPFS. `write(position, bytes)` writes weights
 *  bytes at a position, `finish(meta)` completes the entry, `abort()` deletes it. */
export async function startEntry(url, config, tokenizer) {
  const dir = await root(true);
  if (!dir) return null;
  const key = keyOf(url);
  await dir.removeEntry(key, { recursive: true }).catch(() => {});
  let entry;
  let weights;
  try {
    entry = await dir.getDirectoryHandle(key, { create: true });
    await writeFile(entry, 'config.json', config);
    await writeFile(entry, 'tokenizer.json', tokenizer);
    weights = await (await entry.getFileHandle('weights', { create: true })).createWritable();
  } catch (e) {
    await dir.removeEntry(key, { recursive: true }).catch(() => {});
    throw e;
  }
  return {
    write: (position, data) => weights.write({ type: 'write', position, data }),
    finish: async (meta) => {
      await weights.close();
      await writeFile(entry, 'meta.json', JSON.stringify({ ...meta, url, savedAt: new Date().toISOString() }));
    },
    abort: async () => {
      await weights.abort().catch(() => {});
      await dir.removeEntry(key, { recursive: true }).catch(() => {});
    },
  };
}

/** Deletes the entry for `url` (if any). */
export async function remove(url) {
  const dir = await root(false);
  await dir?.removeEntry(keyOf(url), { recursive: true }).catch(() => {});
}

/** Every complete entry: [{ url, source, dtype, size, savedAt }], newest first. */
export async function list() {
  const dir = await root(false);
  if (!dir) return [];
  const out = [];
  for await (const [, entry] of dir.entries()) {
    if (entry.kind !== 'directory') continue;
    try {
      const { url, source, dtype, size, savedAt } = JSON.parse(new TextDecoder().decode(await readBytes(entry, 'meta.json')));
      out.push({ url, source, dtype, size, savedAt });
    } catch { /* incomplete: not listed */ }
  }
  return out.sort((a, b) => b.savedAt.localeCompare(a.savedAt));
}

/** What the browser grants this origin: { usage, quota } in bytes (null if unknown). */
export async function estimate() {
  try {
    return await navigator.storage.estimate();
  } catch {
    return null;
  }
}
