// The demo page: loads the built-in model on open, generates with streamed tokens, and loads
// other models from a URL or local files. All model work happens in the worker (client.js).
import { TokenFormerClient } from './client.js';
import { interventionText, parseIntervention } from './inspector.js';
import { fillReleasedMenu, renderCache, resolveModel } from './models.js';

const $ = (id) => document.getElementById(id);
const DEFAULT_MODEL = new URL('../models/tokenformer-moby/', import.meta.url).href;
const DEFAULT_FILES = ['config.json', 'model.safetensors', 'tokenizer.json'];

const client = new TokenFormerClient();
const inspector = $('inspector');
inspector.client = client;
let loaded = false;
let generating = false;
let modelInfo = null;
/** The prompt and generated ids of the last generation, for the inspector. */
let lastRun = null;
let loading = false;

function megabytes(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function showNotice(message, kind = 'error') {
  $('notice-text').textContent = message;
  $('notice').className = kind;
  $('notice').hidden = false;
}
$('notice-close').onclick = () => { $('notice').hidden = true; };

function refreshButtons() {
  $('generate').disabled = !loaded || generating || loading;
  $('generate-again').disabled = !loaded || generating || loading || !inspector.interventions.length;
  $('inspect').disabled = !loaded || generating || loading;
  $('stop').disabled = !generating;
  $('load').disabled = loading;
}

function samplingParams() {
  const number = (id, parse) => {
    const input = $(id);
    const value = parse(input.value);
    if (!Number.isFinite(value)) throw new Error(`${input.parentElement.textContent.trim()}: "${input.value}" is not a number`);
    return value;
  };
  return {
    temperature: number('temperature', parseFloat),
    top_k: number('top-k', (v) => parseInt(v, 10)),
    top_p: number('top-p', parseFloat),
    repetition_penalty: number('repetition-penalty', parseFloat),
    max_tokens: number('max-tokens', (v) => parseInt(v, 10)),
    seed: number('seed', (v) => parseInt(v, 10)),
  };
}

function describe(info, name) {
  const badge = document.createElement('span');
  badge.className = info.backend === 'webgpu' ? 'badge' : 'badge cpu';
  badge.textContent = info.backend === 'webgpu' ? 'WebGPU' : 'CPU';
  const detail = info.backend === 'webgpu' ? ` ${info.adapter}` : ' WebAssembly';
  $('engine-status').replaceChildren(badge, detail);
  $('model-name').textContent = `${name}: ${(info.parameters / 1e6).toFixed(2)}M parameters, ${megabytes(info.bytes)}, ` +
    `${info.vocabSize} tokens, context ${info.maxPositions}; wasm memory ${megabytes(info.wasmMemory)}`;
  if (info.notice) showNotice(info.notice, 'info');
}

/** The last model that loaded, to load again after a lost GPU device. */
let current = null;

async function load(source, name) {
  loading = true;
  refreshButtons();
  $('notice').hidden = true;
  const bar = $('load-progress');
  bar.hidden = false;
  bar.value = 0;
  $('load-text').textContent = `Loading ${name}…`;
  const options = {
    backend: $('backend').value, dtype: $('dtype').value, context: Number($('context').value) || undefined,
    // The built-in model is next to the page: only other URLs are kept between visits.
    cache: source.url !== DEFAULT_MODEL,
  };
  try {
    const started = {};
    const info = await client.load(source, options, (p) => {
      const verb = { download: 'Downloading', read: 'Reading' }[p.phase];
      bar.max = p.total || 1;
      bar.value = p.total ? p.loaded : 0;
      started[p.file] ??= performance.now();
      const seconds = (performance.now() - started[p.file]) / 1000;
      const rate = seconds > 0.5 ? ` (${megabytes(p.loaded / seconds)}/s)` : '';
      $('load-text').textContent = `${verb} ${p.file}: ${megabytes(p.loaded)}${p.total ? ` of ${megabytes(p.total)}` : ''}${rate}`;
    });
    loaded = true;
    current = { source, name };
    modelInfo = info;
    inspector.model = info;
    describe(info, name);
    $('load-text').textContent = `Loaded ${name}${info.cache === 'hit' ? ' from the cache' : info.cache === 'saved' ? ' (cached for the next visit)' : ''}.`;
    refreshCache();
    const linked = linkedInterventions();
    if (linked.length) {
      await inspector.setInterventions(linked).catch((e) => showNotice(`The link's interventions: ${e.message}`));
    } else {
      inspector.interventions = [];
      inspector.drawChips();
    }
    document.body.dataset.model = name;
  } catch (e) {
    showNotice(`Could not load ${name}: ${e.message}`);
    $('load-text').textContent = loaded ? 'The previous model is still loaded.' : '';
  } finally {
    bar.hidden = true;
    loading = false;
    refreshButtons();
  }
}

/** The sampling settings, or null (with a notice saying which field is wrong). */
function checkedParams() {
  try {
    return samplingParams();
  } catch (e) {
    showNotice(e.message);
    return null;
  }
}

async function generate() {
  const params = checkedParams();
  if (!params) return;
  const prompt = $('prompt').value;
  const output = $('output');
  output.replaceChildren();
  const promptSpan = document.createElement('span');
  promptSpan.className = 'prompt';
  promptSpan.textContent = prompt;
  const generated = document.createElement('span');
  generated.className = 'generated';
  output.append(promptSpan, generated);
  output.dataset.ids = '';
  delete output.dataset.done;
  $('stats').textContent = '';
  $('notice').hidden = true;
  generating = true;
  refreshButtons();
  const ids = [];
  const live = $('live').checked && inspector.summary;
  try {
    const stats = await client.generate(prompt, params, (t) => {
      ids.push(t.id);
      generated.textContent += t.text;
      output.dataset.ids = ids.join(',');
      $('stats').textContent = `${ids.length} tokens…`;
      // Live maps: the inspector follows the running generation (no ids), one update at a time.
      if (live) inspector.inspect().catch(() => {});
    });
    lastRun = { prompt, ids: stats.ids };
    const parts = [`${stats.ids.length} tokens`, `stopped: ${stats.stopReason.replaceAll('_', ' ')}`];
    if (stats.timeToFirstTokenMs !== null) parts.push(`first token after ${stats.timeToFirstTokenMs.toFixed(0)} ms (${stats.promptTokens}-token prompt)`);
    if (stats.tokensPerSecond !== null) parts.push(`${stats.tokensPerSecond.toFixed(1)} tokens/s`);
    $('stats').textContent = parts.join(' · ');
    output.dataset.done = stats.stopReason;
    if (live) inspectOutput().catch((e) => showNotice(`Inspection failed: ${e.message}`));
  } catch (e) {
    showNotice(`Generation failed: ${e.message}`);
    if (!client.worker) {
      // The engine's worker died with its model: start again on the built-in one.
      loaded = false;
      load({ kind: 'url', url: DEFAULT_MODEL }, 'tokenformer-moby');
    } else if (/device was lost/.test(e.message) && current) {
      // A new engine gets a new device: load the same model again.
      loaded = false;
      load(current.source, current.name).then(() => showNotice(`The GPU device was lost; ${current.name} was loaded again.`, 'info'));
    }
  } finally {
    generating = false;
    refreshButtons();
  }
}

function loadFiles(files, name) {
  if (!files.length) return;
  document.querySelector('input[name=source][value=files]').checked = true;
  load({ kind: 'files', files }, name);
}

/** Every file under dropped items, folders included (recursively). */
async function droppedFiles(items) {
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  await Promise.all([...items].map((i) => i.webkitGetAsEntry()).filter(Boolean).map(walk));
  return files;
}

/** Inspects the prompt and, when it produced the output shown, the generated tokens. */
async function inspectOutput() {
  const prompt = $('prompt').value;
  let ids = await client.encode(prompt);
  if (lastRun?.prompt === prompt) ids = ids.concat(lastRun.ids);
  if (!ids.length) throw new Error('the prompt is empty');
  await inspector.inspect(ids.slice(0, modelInfo.maxPositions));
}

$('generate').onclick = generate;
$('inspect').onclick = async () => {
  $('inspect').disabled = true;
  try {
    await inspectOutput();
  } catch (e) {
    showNotice(`Inspection failed: ${e.message}`);
  } finally {
    refreshButtons();
  }
};
inspector.addEventListener('inspector-error', (e) => showNotice(`Inspector: ${e.detail.message}`));

// The interventions live in the page's address (#intervene=0:ffn:12=0,1:query:3=2), so a finding can
// be shared as a link; a link's interventions are applied once its model has loaded.
const HASH_KEY = 'intervene';
function linkedInterventions() {
  const value = new URLSearchParams(location.hash.slice(1)).get(HASH_KEY);
  if (!value) return [];
  const list = value.split(',').map((t) => [t, parseIntervention(t)]);
  const bad = list.filter(([, i]) => !i).map(([t]) => t);
  if (bad.length) showNotice(`The link's interventions ${bad.join(', ')} are not LAYER:PROJ:SLOT=FACTOR; they are ignored.`);
  return list.map(([, i]) => i).filter(Boolean);
}
inspector.addEventListener('interventions-change', (e) => {
  const list = e.detail.interventions;
  const hash = `#${HASH_KEY}=${list.map(interventionText).join(',')}`;
  history.replaceState(null, '', list.length ? hash : location.pathname + location.search);
  refreshButtons();
});

/** Generates twice with the same prompt, seed and settings, without and with the interventions,
 *  and shows the two texts side by side. */
async function generateAgain() {
  const params = checkedParams();
  if (!params) return;
  const active = inspector.interventions.slice();
  const prompt = $('prompt').value;
  const columns = { without: $('compare-without'), with: $('compare-with') };
  $('compare').hidden = false;
  for (const c of Object.values(columns)) { c.textContent = ''; delete c.dataset.ids; }
  delete $('compare').dataset.done;
  generating = true;
  refreshButtons();
  try {
    for (const [kind, set] of [['without', []], ['with', active]]) {
      await client.setInterventions(set);
      const ids = [];
      await client.generate(prompt, params, (t) => { ids.push(t.id); columns[kind].textContent += t.text; });
      columns[kind].dataset.ids = ids.join(',');
    }
    $('compare').dataset.done = 'true';
  } catch (e) {
    showNotice(`Generation failed: ${e.message}`);
    await client.setInterventions(active).catch(() => {});
  } finally {
    generating = false;
    refreshButtons();
  }
}
$('generate-again').onclick = generateAgain;
$('stop').onclick = () => client.stop();
$('prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('generate').disabled) generate();
});
$('load').onclick = () => {
  const source = document.querySelector('input[name=source]:checked').value;
  if (source === 'default') load({ kind: 'url', url: DEFAULT_MODEL }, 'tokenformer-moby');
  else if (source === 'url') {
    const url = resolveModel($('model-url').value);
    if (!url) showNotice('Enter a hub id (owner/name), the URL of a model folder (with config.json, tokenizer.json and the weights) or of a weights file.');
    else load({ kind: 'url', url }, url);
  } else {
    const files = [...$('model-files').files, ...$('model-folder').files];
    if (!files.length) showNotice('Choose the model files or folder first.');
    else loadFiles(files, files.find((f) => /\.(safetensors|bin)$/.test(f.name))?.name ?? 'local files');
  }
};
for (const id of ['model-files', 'model-folder']) {
  $(id).onchange = (e) => {
    const files = [...e.target.files];
    const folder = files[0]?.webkitRelativePath?.split('/')[0];
    loadFiles(files, folder || files.find((f) => /\.(safetensors|bin)$/.test(f.name))?.name || 'local files');
    e.target.value = '';
  };
}
const zone = $('drop-zone');
zone.ondragover = (e) => { e.preventDefault(); zone.classList.add('over'); };
zone.ondragleave = () => zone.classList.remove('over');
zone.ondrop = async (e) => {
  e.preventDefault();
  zone.classList.remove('over');
  try {
    loadFiles(await droppedFiles(e.dataTransfer.items), 'dropped files');
  } catch (err) {
    showNotice(`Could not read the dropped files: ${err.message}`);
  }
};
window.addEventListener('unhandledrejection', (e) => { e.preventDefault(); showNotice(String(e.reason?.message ?? e.reason)); });

// The built-in model's download size, then the model itself.
Promise.all(DEFAULT_FILES.map((f) => fetch(DEFAULT_MODEL + f, { method: 'HEAD' })
  .then((r) => Number(r.headers.get('content-length')) || 0)))
  .then((sizes) => { $('default-size').textContent = `(${megabytes(sizes.reduce((a, b) => a + b, 0))})`; })
  .catch(() => {});
function refreshCache() {
  renderCache($('cache-list'), $('storage-estimate'), (url) => {
    $('model-url').value = url;
    document.querySelector('input[name=source][value=url]').checked = true;
    load({ kind: 'url', url }, url);
  }).catch(() => {});
}
fillReleasedMenu($('released'), $('model-url'), () => { document.querySelector('input[name=source][value=url]').checked = true; });
refreshCache();

// ?model=owner/name (a hub id) or ?model=URL loads that model instead of the built-in one.
const asked = new URLSearchParams(location.search).get('model');
if (asked) {
  const url = resolveModel(asked);
  $('model-url').value = url;
  document.querySelector('input[name=source][value=url]').checked = true;
  load({ kind: 'url', url }, url);
} else {
  load({ kind: 'url', url: DEFAULT_MODEL }, 'tokenformer-moby');
}
