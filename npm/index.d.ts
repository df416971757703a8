// Types of tokenformer-web in the browser. The engine's own types come from the wasm bindings.
import type {
  Engine, Projection, SamplingParams, PattentionCapture, PattentionSummary, AttentionCapture, DictionaryEntry,
  InitInput, Intervention, NextToken, SearchResult, LogitLens,
} from './pkg/tokenformer.js';

export { Engine, Token } from './pkg/tokenformer.js';
export type {
  Projection, SamplingParams, LoadOptions, WeightsReader, PattentionCapture, PattentionMapSummary,
  PattentionSummary, AttentionCapture, BlockCapture, DictionaryEntry, Intervention, NextToken, SearchHit,
  SearchResult, LogitLens,
} from './pkg/tokenformer.js';

/** Where a model's three files come from. */
export type ModelSource =
  | { kind: 'url'; url: string }
  | { kind: 'urls'; config: string; tokenizer: string; weights: string }
  | { kind: 'files'; files: File[] | FileList }
  | { kind: 'bytes'; config: Uint8Array; tokenizer: Uint8Array; weights: Uint8Array };

export interface EngineOptions {
  /** 'auto' (default): WebGPU when the browser has an adapter, else the CPU. */
  backend?: 'auto' | 'webgpu' | 'cpu';
  /** Weight format on either backend: 'f16' halves memory and bytes read; 'q8' and 'q4' quantize the parameter tokens (8.5 and 5 bits a weight, the embedding kept f16); compute is f32 always. 'auto' (default): f32 up to 100M parameters, above it the largest of f16, q8, q4 whose memory plan fits `memoryBudget` (default 2 GiB), said in `engine.notice`. */
  dtype?: 'auto' | 'f32' | 'f16' | 'q8' | 'q4';
  /** Positions the WebGPU KV cache holds (default: the model's maximum); shorter takes less GPU memory. */
  context?: number;
  /** Device bytes a WebGPU model may take: more is refused before the weights are fetched, saying what would fit. */
  memoryBudget?: number;
  /** WebGPU kernels shaped for a GPU or for a CPU adapter (SwiftShader, which runs workgroups one after another); 'auto' (default) picks by the adapter. */
  kernels?: 'auto' | 'gpu' | 'cpu';
  /** The KV cache: 'f16' (half the memory; on WebGPU the default with f16, q8 and q4 weights) or 'f32' (the exact numbers; the default with f32 weights and on the CPU). */
  kvCache?: 'f32' | 'f16';
  /** Keep models loaded by URL between visits (Origin Private File System); default true. */
  cache?: boolean;
  /** Where tokenformer_bg.wasm is, if not next to pkg/tokenformer.js: its URL, or its bytes (createEngine). */
  wasm?: InitInput;
}

export interface Progress {
  phase: 'download' | 'read';
  file: string;
  loaded: number;
  total: number;
}

export interface ModelInfo {
  backend: 'webgpu' | 'cpu';
  adapter: string | null;
  /** Why 'auto' fell back to the CPU, or what happened to the cache, if anything. */
  notice: string | null;
  /** 'hit': loaded from the cache; 'saved': downloaded and cached for the next visit; null: not cached. */
  cache: 'hit' | 'saved' | null;
  parameters: number;
  vocabSize: number;
  maxPositions: number;
  bytes: number;
  layers: number;
  heads: number;
  slots: Record<Projection, number>;
  /** A grown model's first-stage slot counts: slots from there on were added by growth. */
  growth: Record<Projection, number> | null;
  wasmMemory: number;
}

export interface GenerationStats {
  ids: number[];
  promptTokens: number;
  stopReason: 'end_of_text' | 'max_tokens' | 'context_full' | 'cancelled';
  timeToFirstTokenMs: number | null;
  tokensPerSecond: number | null;
}

export type WithTexts<T> = Omit<T, 'ids'> & { ids: Uint32Array; texts: string[] };

export interface InspectorView {
  ids: number[];
  texts: string[];
  summary?: PattentionSummary;
  map?: PattentionCapture;
  attention?: AttentionCapture;
}

/** The engine in a Web Worker behind promises: the page never freezes. */
export class TokenFormerClient {
  /** `workerUrl`: where www/worker.js is served, if not next to the client module. */
  constructor(workerUrl?: URL | string);
  /** Loads a model (the built-in one when `source` is omitted) and makes it current. */
  load(source?: ModelSource, options?: Omit<EngineOptions, 'wasm'> & { wasm?: string }, onProgress?: (p: Progress) => void): Promise<ModelInfo>;
  /** Generates after `prompt`, calling `onToken` as each token arrives. */
  generate(prompt: string, params?: SamplingParams, onToken?: (t: { id: number; text: string }) => void): Promise<GenerationStats>;
  /** Ends the running generation after the current token; its promise resolves normally. */
  stop(): void;
  terminate(): void;
  encode(text: string): Promise<number[]>;
  /** Every Pattention layer reduced to each token's top `k` slots and column sums. Without
   *  `ids`, the running generation's tokens (it goes on). */
  inspectSummary(ids: number[] | undefined, k: number): Promise<WithTexts<PattentionSummary>>;
  inspect(ids: number[] | undefined, layer: number, proj: Projection): Promise<WithTexts<PattentionCapture>>;
  attention(ids: number[] | undefined, layer: number): Promise<WithTexts<AttentionCapture>>;
  dictionary(layer: number, proj: Projection, slot: number, k: number): Promise<DictionaryEntry[]>;
  inspectView(ids: number[] | undefined, k: number, open?: { layer: number; proj: Projection } | null): Promise<InspectorView>;
  /** Scales parameter tokens' Theta columns in every forward pass from now on (0 knocks one out);
   *  `[]` removes them. Ends a running generation. Resolves to the set in force. */
  setInterventions(list: Intervention[]): Promise<Intervention[]>;
  /** The `k` most likely next tokens after `ids` under the interventions (one forward pass), and
   *  the engine's count of forward passes so far. */
  nextTokens(ids: number[], k: number): Promise<{ top: NextToken[]; passes: number }>;
  /** The value parameter tokens pointing at `token` (one token's text, or its id), the `k` best. */
  search(token: string | number, k: number): Promise<SearchResult>;
  /** Each block's `k` most likely next tokens per position, with the texts of inputs and tokens. */
  logitLens(ids: number[] | undefined, k: number): Promise<LogitLens & { texts: string[]; topTexts: string[] }>;
  /** Forward passes the engine has run since it loaded. */
  passes(): Promise<number>;
}

/** The built-in model's three files, next to the package's modules. */
export const DEFAULT_MODEL: Readonly<{ kind: 'urls'; config: string; tokenizer: string; weights: string }>;

/** Instantiates the wasm module once (by default the .wasm shipped in the package). */
export function initWasm(wasm?: InitInput): Promise<unknown>;

/** The three files of a model source. */
export function readModel(source: ModelSource, onProgress?: (p: Progress) => void): Promise<{
  config: Uint8Array; tokenizer: Uint8Array; weights: Uint8Array | { size: number; read(offset: number, length: number): Uint8Array };
}>;

/** Models cached between visits: their URL, weights file name, size in bytes and when they were saved. */
export function cachedModels(): Promise<{ url: string; weights: string; size: number; savedAt: string }[]>;
/** Deletes the cached copy of the model loaded from `url`. */
export function removeCachedModel(url: string): Promise<void>;
/** What the browser grants this origin's storage, in bytes (null where unknown). */
export function storageEstimate(): Promise<{ usage?: number; quota?: number } | null>;

/** Loads a model (the built-in one by default) in this context: a worker of your own or the page.
 *  The weights stream from their source into the engine, never held whole. */
export function createEngine(source?: ModelSource, options?: EngineOptions, onProgress?: (p: Progress) => void): Promise<{ engine: Engine; info: ModelInfo }>;
