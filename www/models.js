// The page's model menu and cache list: the authors' released checkpoints, hub ids resolved to
// their download folder, and the models this browser keeps between visits (OPFS, see cache.js).
import { list, remove, estimate } from './cache.js';

/** The released checkpoints (float32 pytorch_model.bin on the hub): download size and what the
 *  weights take on the GPU in f16 and in q4 (the parameter tokens in 4 bits, the embedding f16;
 *  Engine.planMemory gives these and adds the KV cache for the chosen context). */
export const RELEASED = [
  { id: 'Haiyang-W/TokenFormer-150M', download: 608e6, f16: 0.30e9, q4: 0.148e9 },
  { id: 'Haiyang-W/TokenFormer-450M', download: 1.82e9, f16: 0.91e9, q4: 0.355e9 },
  { id: 'Haiyang-W/TokenFormer-900M', download: 3.61e9, f16: 1.80e9, q4: 0.653e9 },
  { id: 'Haiyang-W/TokenFormer-1-5B', download: 6.35e9, f16: 3.17e9, q4: 1.10e9 },
];

/** A hub repository id (`owner/name`) as its download folder; anything else is a URL as given. */
export function resolveModel(text) {
  const id = text.trim();
  return /^[\w.-]+\/[\w.-]+$/.test(id) ? `https://huggingface.co/${id}/resolve/main/` : id;
}

const size = (bytes) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(0)} MB`);

/** Fills the released-checkpoints menu; picking one puts its folder URL in `urlInput`. */
export function fillReleasedMenu(select, urlInput, onPick) {
  for (const m of RELEASED) {
    const option = document.createElement('option');
    option.value = m.id;
    option.textContent = `${m.id.split('/')[1]}: ${size(m.download)} download; on the GPU ${size(m.f16)} of f16 or ${size(m.q4)} of q4 weights`;
    select.append(option);
  }
  select.onchange = () => {
    if (!select.value) return;
    urlInput.value = resolveModel(select.value);
    onPick();
  };
}

/** Lists the cached models with their sizes, a Load and a Delete button each, and the storage
 *  this origin uses of its quota. */
export async function renderCache(listElement, estimateElement, onLoad) {
  const entries = await list();
  listElement.replaceChildren(...entries.map((e) => {
    const item = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = `${e.url} (${e.source}, kept as ${e.dtype}: ${size(e.size)})`;
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = 'Load';
    open.onclick = () => onLoad(e.url);
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete the cached copy of ${e.url}`);
    del.onclick = async () => {
      await remove(e.url);
      await renderCache(listElement, estimateElement, onLoad);
    };
    item.append(label, open, del);
    return item;
  }));
  if (!entries.length) {
    const item = document.createElement('li');
    item.className = 'muted';
    item.textContent = 'None yet: models loaded from a URL are kept here for the next visit.';
    listElement.append(item);
  }
  const storage = await estimate();
  estimateElement.textContent = storage ? `This site uses ${size(storage.usage)} of the ${size(storage.quota)} the browser allows it.` : '';
  listElement.dataset.count = String(entries.length);
}
