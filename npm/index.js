// tokenformer-web in the browser: TokenFormerClient runs the engine in a Web Worker (the page never
// freezes); createEngine runs it in the current context (a worker of your own, or the main thread).
export { TokenFormerClient } from './www/client.js';
export { createEngine, initWasm, readModel, DEFAULT_MODEL, Engine, cachedModels, removeCachedModel, storageEstimate } from './www/engine.js';
