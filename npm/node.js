// tokenformer-web in Node (20+): the wasm engine on the CPU backend, models read from disk a tensor
// at a time. The built-in model ships in the package.
import { openSync, readSync, closeSync, fstatSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initSync, Engine } from './pkg/tokenformer.js';

export { Engine };

/** The folder of the built-in model (config.json, model.safetensors, tokenizer.json). */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('./models/tokenformer-moby/', import.meta.url));

let ready = false;

/** Instantiates the wasm module once: by default the .wasm in this package; `wasm` may be its
 *  bytes or a compiled WebAssembly.Module. */
export async function initWasm(wasm) {
  if (!ready) {
    initSync({ module: wasm ?? (await readFile(new URL('./pkg/tokenformer_bg.wasm', import.meta.url))) });
    ready = true;
  }
}

/** A weights file read in pieces through a file descriptor: never in memory whole. */
function fileReader(fd) {
  return {
    size: fstatSync(fd).size,
    read(offset, length) {
      const bytes = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, bytes, done, length - done, offset + done);
        if (n === 0) throw new Error(`the weights file ends at byte ${offset + done}, ${length - done} bytes short`);
        done += n;
      }
      return bytes;
    },
  };
}

/**
 * Loads a model folder (config.json, tokenizer.json, and model.safetensors or pytorch_model.bin;
 * the built-in model by default) on the CPU backend. `onProgress(done, total)` counts tensors;
 * `dtype: 'f16'` stores the weights in half the memory, `'q8'` and `'q4'` quantize the parameter tokens.
 */
export async function loadModel(dir = DEFAULT_MODEL_DIR, { wasm, onProgress, dtype = 'f32', kvCache } = {}) {
  await initWasm(wasm);
  const weightsPath = ['model.safetensors', 'pytorch_model.bin'].map((f) => join(dir, f)).find(existsSync);
  if (!weightsPath) throw new Error(`${dir} holds neither model.safetensors nor pytorch_model.bin`);
  const [config, tokenizer] = await Promise.all([readFile(join(dir, 'config.json')), readFile(join(dir, 'tokenizer.json'))]);
  const fd = openSync(weightsPath, 'r');
  try {
    return await Engine.load(config, fileReader(fd), tokenizer, { backend: 'cpu', dtype, kvCache }, onProgress);
  } finally {
    closeSync(fd);
  }
}

/** Generates after `prompt` and resolves to { ids, text, stopReason }; `onToken` sees each token. */
export async function generate(engine, prompt, params = {}, onToken = () => {}) {
  engine.start(engine.encode(prompt), params);
  const ids = [];
  let text = '';
  for (let t = await engine.step(); t; t = await engine.step()) {
    ids.push(t.id);
    text += t.text;
    onToken(t);
  }
  return { ids, text, stopReason: engine.stopReason };
}
