// TokenFormer in a Web Worker, behind promises. The page (app.js) uses only this class.
//
// Protocol (page -> worker):
//   { type: 'load', req, source?: { kind: 'url', url } | { kind: 'urls', config, tokenizer, weights }
//       | { kind: 'files', files: File[] } | { kind: 'bytes', config, tokenizer, weights },
//     options: { backend?: 'auto' | 'webgpu' | 'cpu', dtype?: 'auto' | 'f32' | 'f16' | 'q8' | 'q4', wasm?: string } }
//     (no source: the built-in model)
//   { type: 'generate', req, prompt: string, params: SamplingParams }
//   { type: 'stop' }
//   { type: 'encode', req, text }
//   { type: 'inspectSummary', req, ids?, k }   { type: 'inspect', req, ids?, layer, proj }
//   { type: 'attention', req, ids?, layer }    { type: 'dictionary', req, layer, proj, slot, k }
//   { type: 'inspectView', req, ids?, k, open?: { layer, proj } }
//   { type: 'setInterventions', req, list }   { type: 'nextTokens', req, ids, k }
//   { type: 'search', req, token, k }         { type: 'logitLens', req, ids?, k }   { type: 'passes', req }
//   (inspection without ids covers the running generation's tokens and lets it go on)
// (worker -> page), every reply carrying the request's `req`:
//   { type: 'progress', phase: 'download' | 'read', file, loaded, total }
//   (the weights are decoded as their bytes arrive, so there is no separate decoding phase)
//   { type: 'started', promptTokens }      { type: 'token', id, text }
//   { type: 'result', value }              { type: 'error', message }

/**
 * @typedef {{ temperature?: number, top_k?: number, top_p?: number, repetition_penalty?: number,
 *             seed?: number, max_tokens?: number }} SamplingParams
 * @typedef {{ phase: 'download' | 'read', file: string, loaded: number, total: number }} Progress
 * @typedef {'query' | 'key' | 'value' | 'proj' | 'ffn'} Projection
 * @typedef {{ backend: 'webgpu' | 'cpu', adapter?: string, notice?: string, parameters: number,
 *             vocabSize: number, maxPositions: number, bytes: number, wasmMemory: number,
 *             layers: number, heads: number, slots: Record<Projection, number>,
 *             growth: Record<Projection, number> | null }} ModelInfo
 *   (`growth`: a grown model's first-stage slot counts; slots from there on were added by growth)
 * @typedef {{ layer: number, proj: Projection, slots: number, k: number, top: Uint32Array,
 *             values: Float32Array, columnSums: Float32Array }} MapSummary
 * @typedef {{ ids: Uint32Array, texts: string[], tokens: number, maps: MapSummary[] }} Summary
 * @typedef {{ ids: Uint32Array, texts: string[], layer: number, proj: Projection, tokens: number,
 *             slots: number, weights: Float32Array }} ThetaMap
 * @typedef {{ ids: Uint32Array, texts: string[], layer: number, heads: number, tokens: number,
 *             probs: Float32Array }} AttentionMap
 * @typedef {{ id: number, text: string, score: number }} DictionaryEntry
 * @typedef {{ ids: number[], texts: string[], summary?: Summary, map?: ThetaMap,
 *             attention?: AttentionMap }} InspectorView
 * @typedef {{ layer: number, proj: Projection, slot: number, factor: number }} Intervention
 * @typedef {{ id: number, text: string, prob: number }} NextToken
 * @typedef {{ id: number, text: string, hits: { layer: number, proj: Projection, slot: number,
 *             score: number }[] }} SearchResult
 * @typedef {{ ids: Uint32Array, texts: string[], layers: number, tokens: number, k: number,
 *             top: Uint32Array, probs: Float32Array, topTexts: string[] }} LogitLens
 * @typedef {{ ids: number[], promptTokens: number, stopReason: string,
 *             timeToFirstTokenMs: number | null, tokensPerSecond: number | null }} GenerationStats
 */

export class TokenFormerClient {
  /** @param {URL | string} [workerUrl] where worker.js is served, if not next to this module */
  constructor(workerUrl) {
    this.workerUrl = workerUrl;
    this.worker = null;
    this.nextReq = 1;
    /** @type {Map<number, { resolve: Function, reject: Function, on: Function }>} */
    this.calls = new Map();
  }

  /** The worker, started on first use and again after it died. */
  ensureWorker() {
    if (this.worker) return this.worker;
    // Written out in full so bundlers (Vite, webpack) see the worker and bundle it with its wasm.
    const worker = this.workerUrl
      ? new Worker(this.workerUrl, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = ({ data }) => {
      const call = this.calls.get(data.req);
      if (!call) return;
      if (data.type === 'result') {
        this.calls.delete(data.req);
        call.resolve(data.value);
      } else if (data.type === 'error') {
        this.calls.delete(data.req);
        call.reject(new Error(data.message));
      } else {
        call.on(data);
      }
    };
    // A worker that cannot start or dies takes its model with it: every pending call fails, and
    // the next call starts a fresh worker (which needs a model loaded again).
    const fail = (message) => {
      worker.terminate();
      if (this.worker === worker) this.worker = null;
      for (const call of this.calls.values()) call.reject(new Error(message));
      this.calls.clear();
    };
    worker.onerror = (e) => { e.preventDefault(); fail(`the engine stopped: ${e.message || 'worker error'}`); };
    worker.onmessageerror = () => fail('the engine sent an unreadable message');
    this.worker = worker;
    return worker;
  }

  call(message, on = () => {}) {
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.calls.set(req, { resolve, reject, on });
      this.ensureWorker().postMessage({ ...message, req });
    });
  }

  /**
   * Loads a model and makes it current: the built-in model when `source` is omitted, else a folder
   * or weights file URL, three file URLs, local files, or bytes (see engine.js `readModel`).
   * @param {{ kind: 'url', url: string } | { kind: 'urls', config: string, tokenizer: string, weights: string }
   *   | { kind: 'files', files: File[] } | { kind: 'bytes', config: Uint8Array, tokenizer: Uint8Array,
   *   weights: Uint8Array }} [source]
   * @param {{ backend?: 'auto' | 'webgpu' | 'cpu', dtype?: 'auto' | 'f32' | 'f16' | 'q8' | 'q4', wasm?: string }} [options]
   *   (`wasm`: the URL of tokenformer_bg.wasm, if not next to pkg/tokenformer.js)
   * @param {(p: Progress) => void} [onProgress]
   * @returns {Promise<ModelInfo>}
   */
  load(source, options = {}, onProgress = () => {}) {
    return this.call({ type: 'load', source, options }, (m) => { if (m.type === 'progress') onProgress(m); });
  }

  /**
   * Generates after `prompt`, calling `onToken` as each token arrives.
   * @param {string} prompt
   * @param {SamplingParams} params
   * @param {(t: { id: number, text: string }) => void} [onToken]
   * @returns {Promise<GenerationStats>}
   */
  generate(prompt, params, onToken = () => {}) {
    return this.call({ type: 'generate', prompt, params }, (m) => { if (m.type === 'token') onToken(m); });
  }

  /** @param {string} text @returns {Promise<number[]>} the token ids of `text` */
  encode(text) {
    return this.call({ type: 'encode', text });
  }

  /**
   * Every Pattention layer reduced to each token's top `k` slots and the column sums (on WebGPU
   * reduced on the device). Without `ids`, the running generation's tokens (it goes on).
   * @param {number[] | undefined} ids @param {number} k @returns {Promise<Summary>}
   */
  inspectSummary(ids, k) {
    return this.call({ type: 'inspectSummary', ids, k });
  }

  /**
   * Theta of one Pattention layer, [tokens × slots]. `ids` as for inspectSummary.
   * @param {number[] | undefined} ids @param {number} layer @param {Projection} proj
   * @returns {Promise<ThetaMap>}
   */
  inspect(ids, layer, proj) {
    return this.call({ type: 'inspect', ids, layer, proj });
  }

  /**
   * Attention probabilities of one block per head. `ids` as for inspectSummary.
   * @param {number[] | undefined} ids @param {number} layer @returns {Promise<AttentionMap>}
   */
  attention(ids, layer) {
    return this.call({ type: 'attention', ids, layer });
  }

  /**
   * The `k` vocabulary tokens a parameter token's value vector scores highest (tied embedding).
   * @param {number} layer @param {Projection} proj @param {number} slot @param {number} k
   * @returns {Promise<DictionaryEntry[]>}
   */
  dictionary(layer, proj, slot, k) {
    return this.call({ type: 'dictionary', layer, proj, slot, k });
  }

  /**
   * What the inspector element shows, all over the same tokens: the summary (when `k` > 0) and,
   * with `open`, that map and its layer's attention. `ids` as for inspectSummary.
   * @param {number[] | undefined} ids @param {number} k
   * @param {{ layer: number, proj: Projection } | null} [open] @returns {Promise<InspectorView>}
   */
  inspectView(ids, k, open = null) {
    return this.call({ type: 'inspectView', ids, k, open });
  }

  /**
   * Scales parameter tokens' Theta columns in every forward pass from now on (0 knocks a slot out,
   * 2 doubles it); `[]` removes them. Ends a running generation. Resolves to the set in force.
   * @param {Intervention[]} list @returns {Promise<Intervention[]>}
   */
  setInterventions(list) {
    return this.call({ type: 'setInterventions', list });
  }

  /**
   * The `k` most likely next tokens after `ids` under the interventions in force (one forward
   * pass), with the engine's count of forward passes so far.
   * @param {number[]} ids @param {number} k @returns {Promise<{ top: NextToken[], passes: number }>}
   */
  nextTokens(ids, k) {
    return this.call({ type: 'nextTokens', ids, k });
  }

  /**
   * The value parameter tokens of every layer and projection that point at `token` (text of one
   * token, or its id), the `k` best by dictionary score (on WebGPU scored on the device).
   * @param {string | number} token @param {number} k @returns {Promise<SearchResult>}
   */
  search(token, k) {
    return this.call({ type: 'search', token, k });
  }

  /**
   * Each block's `k` most likely next tokens at every position of `ids` (the logit lens), with the
   * texts of the inputs and of every listed token. `ids` as for inspectSummary.
   * @param {number[] | undefined} ids @param {number} k @returns {Promise<LogitLens>}
   */
  logitLens(ids, k) {
    return this.call({ type: 'logitLens', ids, k });
  }

  /** @returns {Promise<number>} the forward passes the engine has run since it loaded */
  passes() {
    return this.call({ type: 'passes' });
  }

  /** Ends the running generation after the current token; its promise resolves normally. */
  stop() {
    this.worker?.postMessage({ type: 'stop' });
  }

  terminate() {
    this.worker?.terminate();
    this.worker = null;
  }
}
