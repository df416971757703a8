// Types of tokenformer-web in Node (CPU backend, models from disk).
import type { Engine, SamplingParams, Token } from './pkg/tokenformer.js';

export { Engine, Token } from './pkg/tokenformer.js';
export type {
  Projection, SamplingParams, PattentionCapture, PattentionMapSummary, PattentionSummary,
  AttentionCapture, BlockCapture, DictionaryEntry,
} from './pkg/tokenformer.js';

/** The folder of the built-in model. */
export const DEFAULT_MODEL_DIR: string;

/** Instantiates the wasm module once (by default the .wasm shipped in the package). */
export function initWasm(wasm?: BufferSource | WebAssembly.Module): Promise<void>;

/** Loads a model folder (the built-in model by default) on the CPU backend. */
export function loadModel(dir?: string, options?: { wasm?: BufferSource | WebAssembly.Module; onProgress?: (done: number, total: number) => void; dtype?: 'auto' | 'f32' | 'f16' | 'q8' | 'q4'; kvCache?: 'f32' | 'f16' }): Promise<Engine>;

/** Generates after `prompt`; `onToken` sees each token. */
export function generate(engine: Engine, prompt: string, params?: SamplingParams, onToken?: (t: Token) => void): Promise<{
  ids: number[]; text: string; stopReason: string | undefined;
}>;
