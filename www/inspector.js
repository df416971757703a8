// <tokenformer-inspector>: the Pattention inspector as a custom element. It draws what a
// TokenFormer does with each token: a grid of every layer × projection, one large Theta map
// (tokens × parameter tokens, one pixel per cell, zoom and pan), each token's strongest parameter
// tokens, the tokens that use a parameter token and its vocabulary "dictionary", the attention of
// every head, and exports; and acting on it: knocking out or boosting parameter tokens (with the
// next-token distribution with and without them), search by token, and the logit lens. It talks to
// the model only through `client` (a TokenFormerClient, or anything with the same inspectView /
// dictionary / setInterventions / nextTokens / search / logitLens methods).

export const PROJECTIONS = ['query', 'key', 'value', 'proj', 'ffn'];
const THUMB = { width: 72, height: 36 };
const DICTIONARY_SIZE = 12;
const NEXT_TOKENS = 10;
const SEARCH_HITS = 20;
const LENS_TOP = 5;
/** The factors the buttons apply. */
export const KNOCK_OUT = 0;
export const BOOST = 2;

/** An intervention as text, `L:proj:slot=factor` (the CLI's --intervene and the page's link). */
export function interventionText(i) {
  return `${i.layer}:${i.proj}:${i.slot}=${i.factor}`;
}

/** Parses `L:proj:slot=factor`; null when it is not one. */
export function parseIntervention(text) {
  const m = /^(\d+):(query|key|value|proj|ffn):(\d+)=(-?[0-9.]+(?:e-?\d+)?)$/.exec(text.trim());
  if (!m || !Number.isFinite(Number(m[4]))) return null;
  return { layer: Number(m[1]), proj: m[2], slot: Number(m[3]), factor: Number(m[4]) };
}

const sameTarget = (a, b) => a.layer === b.layer && a.proj === b.proj && a.slot === b.slot;

/** Diverging colour of `v` for a scale clipped at `limit`: blue below zero, red above, white at 0;
 *  values whose magnitude is under `threshold` are drawn as zero. Returns [r, g, b]. */
export function divergingColor(v, limit, threshold = 0) {
  if (!(Math.abs(v) >= threshold) || limit <= 0) return [255, 255, 255];
  const t = Math.min(1, Math.abs(v) / limit);
  const [r, g, b] = v >= 0 ? [178, 24, 43] : [33, 102, 172];
  return [255 + (r - 255) * t, 255 + (g - 255) * t, 255 + (b - 255) * t].map(Math.round);
}

/** `divergingColor` as packed RGBA words (little-endian, as ImageData's bytes read through a
 *  Uint32Array) for 256 magnitude steps of each sign: drawing a map is then one lookup per cell. */
function colorTable(limit) {
  const table = (sign) => Uint32Array.from({ length: 256 }, (_, q) => {
    const [r, g, b] = divergingColor((sign * q * limit) / 255, limit);
    return (r | (g << 8) | (b << 16) | (255 << 24)) >>> 0;
  });
  return { positive: table(1), negative: table(-1) };
}

/** The `q`-quantile (0..1) of |values|: the colour scale's clip. `sorted`: |values| already sorted. */
export function absPercentile(values, q, sorted = Float32Array.from(values, Math.abs).sort()) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))];
}

/** Per-map statistics that do not depend on the threshold: the mean entropy and effective number
 *  of slots of the rows, each row read as the distribution |θ| / Σ|θ|. */
export function rowStatistics(weights, tokens, slots) {
  let entropy = 0;
  let effective = 0;
  for (let t = 0; t < tokens; t++) {
    const row = weights.subarray(t * slots, (t + 1) * slots);
    let sum = 0;
    for (const v of row) sum += Math.abs(v);
    let h = 0;
    if (sum > 0) {
      for (const v of row) {
        const p = Math.abs(v) / sum;
        if (p > 0) h -= p * Math.log(p);
      }
    }
    entropy += h;
    effective += Math.exp(h);
  }
  return { entropy: entropy / tokens, effectiveSlots: effective / tokens };
}

/** Share of the weights whose magnitude is above `threshold`. */
export function shareAbove(weights, threshold) {
  let above = 0;
  for (const v of weights) if (Math.abs(v) > threshold) above++;
  return above / weights.length;
}

/** Column order: by index, by total weight (largest first), or by the first token whose weight
 *  passes the threshold (unused columns last, by index). */
export function columnOrder(weights, tokens, slots, order, threshold) {
  const index = Array.from({ length: slots }, (_, i) => i);
  if (order === 'total') {
    const sums = new Float64Array(slots);
    for (let t = 0; t < tokens; t++) for (let s = 0; s < slots; s++) sums[s] += weights[t * slots + s];
    return index.sort((a, b) => sums[b] - sums[a] || a - b);
  }
  if (order === 'first') {
    const first = new Array(slots).fill(Infinity);
    for (let s = 0; s < slots; s++) {
      for (let t = 0; t < tokens; t++) {
        if (weights[t * slots + s] > threshold) { first[s] = t; break; }
      }
    }
    return index.sort((a, b) => first[a] - first[b] || a - b);
  }
  return index;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const visible = (text) => JSON.stringify(text).slice(1, -1);

function download(blob, name) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

let adopted = false;

/** The element's styles: a <link> to inspector.css next to this module, or, where a bundler
 *  inlined that file as a `data:` URL (which a strict CSP's style-src refuses), the same rules as a
 *  constructed stylesheet adopted by the document once. */
function stylesheet() {
  const href = new URL('./inspector.css', import.meta.url).href;
  if (!href.startsWith('data:')) return el('link', { rel: 'stylesheet', href });
  if (!adopted) {
    const comma = href.indexOf(',');
    const body = href.slice(comma + 1);
    const text = href.slice(0, comma).endsWith(';base64')
      ? new TextDecoder().decode(Uint8Array.from(atob(body), (c) => c.charCodeAt(0)))
      : decodeURIComponent(body);
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(text);
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    adopted = true;
  }
  return '';
}

export class TokenFormerInspector extends HTMLElement {
  constructor() {
    super();
    /** @type {import('./client.js').TokenFormerClient | null} */
    this.client = null;
    /** @type {import('./client.js').ModelInfo | null} */
    this.model = null;
    this.topK = 8;
    this.summary = null;
    this.map = null; // the open Theta map
    this.open = null; // { layer, proj }
    this.selectedSlot = null;
    this.view = { zoom: 1, x: 0, y: 0 };
    this.order = [];
    this.clip = 1;
    this.pending = null; // the ids of an update asked for while one is running
    this.busy = false;
    this.frameTimes = [];
    /** @type {{ layer: number, proj: string, slot: number, factor: number }[]} */
    this.interventions = [];
    this.baseline = null; // { key, top }: the next-token distribution without interventions
    this.next = null; // { key, without, with, passes }
    this.lens = null;
    this.searchResult = null;
  }

  connectedCallback() {
    if (this.ui) return;
    const css = stylesheet();
    const control = (label, input) => el('label', {}, label, input);
    const ui = {
      status: el('p', { className: 'tfi-status muted', textContent: 'Inspect a prompt to see its Pattention maps.' }),
      grid: el('table', { className: 'tfi-grid' }),
      preview: el('div', { className: 'tfi-preview', hidden: true }),
      order: el('select', {}, ...[['index', 'by index'], ['total', 'by total weight'], ['first', 'by first use']]
        .map(([value, text]) => el('option', { value, textContent: text }))),
      clip: el('select', {}, ...[['1', '100 %'], ['0.999', '99.9 %'], ['0.99', '99 %'], ['0.95', '95 %']]
        .map(([value, text]) => el('option', { value, textContent: text }))),
      threshold: el('input', { type: 'range', min: '0', max: '1', step: '0.001', value: '0' }),
      thresholdValue: el('output', {}),
      title: el('h3', { className: 'tfi-title' }),
      stats: el('p', { className: 'tfi-stats muted' }),
      legend: el('canvas', { className: 'tfi-legend', width: 200, height: 10 }),
      legendText: el('span', { className: 'tfi-legend-text muted' }),
      strip: el('canvas', { className: 'tfi-strip', height: 6 }),
      canvas: el('canvas', { className: 'tfi-map', width: 720, height: 320, tabIndex: 0 }),
      hover: el('div', { className: 'tfi-hover muted' }),
      text: el('div', { className: 'tfi-text' }),
      slotInfo: el('div', { className: 'tfi-slot' }),
      heads: el('div', { className: 'tfi-heads' }),
      attention: el('canvas', { className: 'tfi-attention', width: 260, height: 260 }),
      attentionInfo: el('p', { className: 'muted' }),
      exports: el('div', { className: 'tfi-exports' }),
      chips: el('div', { className: 'tfi-chips', textContent: 'None: every parameter token as trained.' }),
      nextTokens: el('div', { className: 'tfi-next' }),
      searchInput: el('input', { type: 'text', className: 'tfi-search-input', placeholder: 'a token, e.g. " whale"', ariaLabel: 'Token to search for' }),
      searchResults: el('div', { className: 'tfi-search-results' }),
      lensButton: el('button', { type: 'button', className: 'tfi-lens-button', textContent: 'Show the logit lens' }),
      lens: el('div', { className: 'tfi-lens-box' }),
    };
    this.ui = ui;
    ui.order.value = 'index';
    ui.clip.value = '0.999';
    const exportButton = (kind) => el('button', { type: 'button', textContent: kind, className: `tfi-export-${kind.toLowerCase()}`, onclick: () => this.export(kind) });
    ui.exports.append('Export ', exportButton('PNG'), exportButton('JSON'), exportButton('CSV'));
    const mapPanel = el('div', { className: 'tfi-map-panel', hidden: true },
      ui.title, ui.stats,
      el('div', { className: 'tfi-controls' },
        control('Columns ', ui.order), control('Clip at ', ui.clip),
        control('Threshold ', ui.threshold), ui.thresholdValue),
      el('div', { className: 'tfi-legend-row' }, ui.legend, ui.legendText),
      el('div', { className: 'tfi-canvas-box' }, ui.strip, ui.canvas),
      el('p', { className: 'muted tfi-help', textContent: 'Wheel: zoom · drag: pan · double-click: reset · click a column: select that parameter token' }),
      ui.hover, ui.text, ui.slotInfo, ui.exports,
      el('h4', { textContent: 'Attention of this layer, per head' }), ui.heads, ui.attentionInfo, ui.attention);
    ui.mapPanel = mapPanel;
    const searchForm = el('form', { className: 'tfi-search' }, ui.searchInput, el('button', { type: 'submit', textContent: 'Search' }));
    searchForm.onsubmit = (e) => { e.preventDefault(); this.search(ui.searchInput.value).catch((err) => this.fail(err)); };
    ui.lensButton.onclick = () => this.showLens().catch((e) => this.fail(e));
    const actions = el('div', { className: 'tfi-actions' },
      el('h4', { textContent: 'Interventions' }),
      el('p', { className: 'muted tfi-help', textContent: 'Knock out (×0) or boost (×2) a parameter token from its panel or a search hit: its Theta column is scaled in every forward pass.' }),
      ui.chips,
      el('h4', { textContent: 'Next token after the inspected text' }), ui.nextTokens,
      el('h4', { textContent: 'Search by token' }),
      el('p', { className: 'muted tfi-help', textContent: 'The value parameter tokens of every layer and projection that point at a token: its embedding · each value vector (the dictionary score).' }),
      searchForm, ui.searchResults,
      el('h4', { textContent: 'Logit lens' }), ui.lensButton, ui.lens);
    this.append(css, ui.status, el('div', { className: 'tfi-overview' }, ui.grid, ui.preview), actions, mapPanel);

    ui.order.onchange = () => this.redraw(true);
    ui.clip.onchange = () => this.redraw(true);
    ui.threshold.oninput = () => this.redraw(true);
    this.attachPanZoom();
  }

  /** Inspects `ids` (or, without them, the running generation's tokens): the grid, and the open
   *  map if there is one. Calls made while one runs are merged into one more update. */
  async inspect(ids) {
    if (!this.client) throw new Error('tokenformer-inspector: set .client first');
    if (this.busy) {
      this.pending = { ids };
      return this.running;
    }
    this.busy = true;
    this.running = (async () => {
      try {
        let next = { ids };
        while (next) {
          this.pending = null;
          await this.update(next.ids);
          next = this.pending;
        }
      } finally {
        this.busy = false;
      }
    })();
    return this.running;
  }

  async update(ids) {
    // Undefined ids: the running generation (live); kept so that opening a map follows it too.
    this.ids = ids;
    const view = await this.client.inspectView(ids, this.topK, this.open);
    this.summary = view.summary;
    this.drawGrid();
    this.ui.status.textContent = `${this.summary.tokens} tokens × ${this.model.layers} layers × 5 Pattention layers; click a cell to open its map.`;
    if (view.map) this.showMap(view);
    this.dispatchEvent(new CustomEvent('inspected', { detail: { tokens: this.summary.tokens } }));
    // A live update (no ids) only follows the maps; an inspection of given tokens also shows their
    // next-token distribution.
    if (ids !== undefined) await this.drawNextTokens();
  }

  /** The inspected tokens, when they are known (not while following a generation). */
  inspectedIds() {
    const ids = this.summary?.ids ?? this.map?.ids;
    return ids ? [...ids] : null;
  }

  /** Replaces the interventions: the engine applies them from now on, the chips and the next-token
   *  distribution follow (one forward pass when the distribution without them is known). */
  async setInterventions(list) {
    if (!this.client) throw new Error('tokenformer-inspector: set .client first');
    const set = await this.client.setInterventions(list.map(({ layer, proj, slot, factor }) => ({ layer, proj, slot, factor })));
    this.interventions = set;
    this.drawChips();
    this.dispatchEvent(new CustomEvent('interventions-change', { detail: { interventions: set.slice() } }));
    await this.drawNextTokens();
  }

  /** Adds (or replaces the factor of) one intervention. */
  intervene(layer, proj, slot, factor) {
    const target = { layer, proj, slot, factor };
    return this.setInterventions([...this.interventions.filter((i) => !sameTarget(i, target)), target]);
  }

  /** Removes the intervention on one parameter token. */
  removeIntervention(layer, proj, slot) {
    return this.setInterventions(this.interventions.filter((i) => !sameTarget(i, { layer, proj, slot })));
  }

  drawChips() {
    const { chips } = this.ui;
    if (!this.interventions.length) {
      chips.replaceChildren('None: every parameter token as trained.');
      return;
    }
    chips.replaceChildren(...this.interventions.map((i) => {
      const label = i.factor === KNOCK_OUT ? 'knocked out' : `×${i.factor}`;
      const remove = el('button', { type: 'button', className: 'tfi-chip-remove', textContent: '×', title: 'Remove', ariaLabel: `Remove ${interventionText(i)}` });
      remove.onclick = () => this.removeIntervention(i.layer, i.proj, i.slot).catch((e) => this.fail(e));
      const chip = el('span', { className: 'tfi-chip', title: interventionText(i) }, `layer ${i.layer} ${i.proj} slot ${i.slot} ${label}`, remove);
      chip.dataset.intervention = interventionText(i);
      return chip;
    }), el('button', { type: 'button', className: 'tfi-clear', textContent: 'Clear all', onclick: () => this.setInterventions([]).catch((e) => this.fail(e)) }));
  }

  /** Knock-out and boost buttons for one parameter token. */
  actionButtons(layer, proj, slot) {
    const button = (text, factor, kind) => el('button', {
      type: 'button', className: `tfi-${kind}`, textContent: text,
      onclick: () => this.intervene(layer, proj, slot, factor).catch((e) => this.fail(e)),
    });
    return el('span', { className: 'tfi-act' }, button('Knock out', KNOCK_OUT, 'knock-out'), button(`Boost ×${BOOST}`, BOOST, 'boost'));
  }

  /** The next-token distribution after the inspected tokens, without and with the interventions:
   *  the one without is computed once per text, so a change of interventions costs one pass. */
  async drawNextTokens() {
    const ids = this.inspectedIds();
    if (!ids) return;
    const key = ids.join(',');
    if (this.baseline?.key !== key) {
      if (this.interventions.length) await this.client.setInterventions([]);
      const { top } = await this.client.nextTokens(ids, NEXT_TOKENS);
      if (this.interventions.length) await this.client.setInterventions(this.interventions);
      this.baseline = { key, top };
    }
    let acted = null;
    let passes = null;
    if (this.interventions.length) {
      ({ top: acted, passes } = await this.client.nextTokens(ids, NEXT_TOKENS));
    }
    this.next = { key, without: this.baseline.top, with: acted, passes };
    const bars = (title, top, kind) => el('div', { className: `tfi-bars tfi-bars-${kind}` },
      el('strong', { textContent: title }),
      ...top.map((t) => {
        const fill = el('span', { className: 'tfi-bar-fill' });
        fill.style.width = `${(100 * t.prob).toFixed(1)}%`;
        const row = el('div', { className: 'tfi-bar' },
          el('span', { className: 'tfi-bar-text', textContent: `“${visible(t.text)}”` }),
          el('span', { className: 'tfi-bar-track' }, fill),
          el('span', { className: 'tfi-bar-value', textContent: `${(100 * t.prob).toFixed(1)} %` }));
        Object.assign(row.dataset, { id: String(t.id), prob: String(t.prob) });
        return row;
      }));
    this.ui.nextTokens.replaceChildren(bars('Without interventions', this.baseline.top, 'without'),
      acted ? bars(`With ${this.interventions.length} intervention${this.interventions.length > 1 ? 's' : ''}`, acted, 'with')
        : el('p', { className: 'muted', textContent: 'Knock out or boost a parameter token to see how this changes.' }));
    this.dispatchEvent(new CustomEvent('next-tokens', { detail: this.next }));
  }

  /** Ranks every value parameter token by how much it points at `token` (text of one token, or an
   *  id) and lists the best, each with Open, Knock out and Boost. */
  async search(token) {
    if (!this.client) throw new Error('tokenformer-inspector: set .client first');
    const result = await this.client.search(token, SEARCH_HITS);
    this.searchResult = result;
    const rows = result.hits.map((h, rank) => {
      const open = el('button', { type: 'button', className: 'tfi-open', textContent: 'Open',
        onclick: () => this.openSlot(h.layer, h.proj, h.slot).catch((e) => this.fail(e)) });
      const row = el('li', {}, el('span', { textContent: `${rank + 1}. layer ${h.layer} ${h.proj} slot ${h.slot}: ${h.score.toFixed(3)} ` }),
        open, this.actionButtons(h.layer, h.proj, h.slot));
      Object.assign(row.dataset, { layer: String(h.layer), proj: h.proj, slot: String(h.slot), score: String(h.score) });
      return row;
    });
    this.ui.searchResults.replaceChildren(
      el('p', { className: 'muted', textContent: `Parameter tokens pointing at “${visible(result.text)}” (id ${result.id}), best first:` }),
      el('ol', { className: 'tfi-hits' }, ...rows));
    this.dispatchEvent(new CustomEvent('search', { detail: result }));
    return result;
  }

  /** Opens the map of `proj` in block `layer` and selects `slot` in it. */
  async openSlot(layer, proj, slot) {
    await this.openMap(layer, proj);
    await this.selectSlot(slot);
  }

  /** The logit lens of the inspected tokens: a blocks × tokens table of each block's most likely
   *  next token (hover: its top 5). */
  async showLens() {
    if (!this.summary) throw new Error('inspect some tokens first');
    const ids = this.ids === undefined ? undefined : [...this.summary.ids];
    const lens = await this.client.logitLens(ids, LENS_TOP);
    this.lens = lens;
    const { layers, tokens, k } = lens;
    const table = el('table', { className: 'tfi-lens' },
      el('tr', {}, el('th', { textContent: 'input →' }), ...lens.texts.map((t) => el('th', { textContent: visible(t) }))));
    for (let l = 0; l < layers; l++) {
      const row = el('tr', {}, el('th', { textContent: `block ${l}` }));
      for (let t = 0; t < tokens; t++) {
        const at = (l * tokens + t) * k;
        const top = Array.from({ length: k }, (_, i) => `${i + 1}. “${visible(lens.topTexts[at + i])}” ${(100 * lens.probs[at + i]).toFixed(1)} %`);
        const p = lens.probs[at];
        const cell = el('td', { textContent: `${visible(lens.topTexts[at])} ${(100 * p).toFixed(0)}%`, title: top.join('\n') });
        cell.style.setProperty('--p', String(p));
        Object.assign(cell.dataset, { layer: String(l), token: String(t), id: String(lens.top[at]), prob: String(p) });
        row.append(cell);
      }
      table.append(row);
    }
    this.ui.lens.replaceChildren(el('p', { className: 'muted', textContent: 'What each block would predict next if the model stopped there (the residual after it through the final norm and the tied head); the last block is the model\'s prediction. Hover a cell for its top 5.' }), table);
    this.dispatchEvent(new CustomEvent('logit-lens', { detail: { layers, tokens } }));
    return lens;
  }

  mapSummary(layer, proj) {
    return this.summary?.maps.find((m) => m.layer === layer && m.proj === proj) ?? null;
  }

  drawGrid() {
    const { grid } = this.ui;
    grid.replaceChildren(el('tr', {}, el('th'), ...PROJECTIONS.map((p) => el('th', { textContent: p }))));
    for (let layer = 0; layer < this.model.layers; layer++) {
      const row = el('tr', {}, el('th', { textContent: `layer ${layer}` }));
      for (const proj of PROJECTIONS) {
        const summary = this.mapSummary(layer, proj);
        const canvas = el('canvas', { width: THUMB.width, height: THUMB.height });
        if (summary) this.drawThumbnail(canvas, summary);
        const cell = el('td', { className: 'tfi-cell', title: `layer ${layer} ${proj}` }, canvas);
        Object.assign(cell.dataset, { layer: String(layer), proj });
        if (this.open?.layer === layer && this.open?.proj === proj) cell.classList.add('open');
        cell.onmouseenter = () => this.showPreview(summary, canvas);
        cell.onmouseleave = () => { this.ui.preview.hidden = true; };
        cell.onclick = () => this.openMap(layer, proj).catch((e) => this.fail(e));
        row.append(cell);
      }
      grid.append(row);
    }
  }

  /** A map from its summary only: each token's top-k slots binned into the thumbnail. */
  drawThumbnail(canvas, s) {
    const { width, height } = canvas;
    const tokens = this.summary.tokens;
    const cells = new Float32Array(width * height);
    let max = 0;
    for (let t = 0; t < tokens; t++) {
      const y = Math.floor((t * height) / tokens);
      for (let i = 0; i < s.k; i++) {
        const v = s.values[t * s.k + i];
        const x = Math.floor((s.top[t * s.k + i] * width) / s.slots);
        const at = y * width + x;
        if (Math.abs(v) > Math.abs(cells[at])) cells[at] = v;
        max = Math.max(max, Math.abs(v));
      }
    }
    const image = new ImageData(width, height);
    cells.forEach((v, i) => {
      const [r, g, b] = divergingColor(v, max);
      image.data.set([r, g, b, 255], i * 4);
    });
    canvas.getContext('2d').putImageData(image, 0, 0);
  }

  showPreview(s, thumb) {
    if (!s) return;
    const { preview } = this.ui;
    const big = el('canvas', { width: THUMB.width * 4, height: THUMB.height * 4 });
    const ctx = big.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(thumb, 0, 0, big.width, big.height);
    let best = 0;
    s.columnSums.forEach((v, i) => { if (v > s.columnSums[best]) best = i; });
    preview.replaceChildren(
      el('strong', { textContent: `layer ${s.layer} ${s.proj}` }),
      el('div', { className: 'muted', textContent: `${this.summary.tokens} tokens × ${s.slots} parameter tokens; most used slot ${best} (Σθ = ${s.columnSums[best].toFixed(3)})` }),
      big);
    preview.hidden = false;
  }

  /** Opens the full map of `proj` in block `layer` (fetched whole: one map is small), for the
   *  tokens the grid shows. */
  async openMap(layer, proj) {
    if (!this.summary) throw new Error('inspect some tokens first');
    this.open = { layer, proj };
    const ids = this.ids === undefined ? undefined : [...this.summary.ids];
    this.showMap(await this.client.inspectView(ids, 0, this.open));
    // Opened by a click on the grid or a search hit, perhaps far above: bring the map into view.
    this.ui.title.scrollIntoView({ block: 'start' });
  }

  showMap({ map, attention, texts }) {
    const { layer, proj } = map;
    this.map = { ...map, texts };
    // Per-map caches: sorted magnitudes (for the clip) and row statistics.
    this.rows = null;
    this.sortedAbs = null;
    if (this.selectedSlot !== null && this.selectedSlot >= this.map.slots) this.selectedSlot = null;
    for (const cell of this.ui.grid.querySelectorAll('.tfi-cell')) {
      cell.classList.toggle('open', Number(cell.dataset.layer) === layer && cell.dataset.proj === proj);
    }
    const max = this.map.weights.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    if (Number(this.ui.threshold.max) !== max) {
      this.ui.threshold.max = String(max || 1);
      this.ui.threshold.step = String((max || 1) / 1000);
    }
    this.ui.mapPanel.hidden = false;
    const { canvas } = this.ui;
    canvas.width = Math.max(320, Math.round(canvas.clientWidth || 720));
    canvas.height = Math.min(480, Math.max(120, this.map.tokens * 8));
    this.ui.title.textContent = `Layer ${layer} · ${proj}: ${this.map.tokens} tokens × ${this.map.slots} parameter tokens`;
    this.redraw(true);
    this.drawText();
    if (this.selectedSlot !== null) this.selectSlot(this.selectedSlot).catch((e) => this.fail(e));
    this.showAttention(attention);
    this.dispatchEvent(new CustomEvent('map-open', { detail: { layer, proj } }));
  }

  get threshold() {
    return Number(this.ui.threshold.value);
  }

  set threshold(value) {
    this.ui.threshold.value = String(value);
    this.redraw(true);
  }

  /** Rebuilds the one-pixel-per-cell image (after a new map, order, clip or threshold), then draws. */
  redraw(rebuild) {
    const m = this.map;
    if (!m) return;
    const started = performance.now();
    if (rebuild) {
      const threshold = this.threshold;
      this.ui.thresholdValue.textContent = threshold.toPrecision(3);
      this.sortedAbs ??= Float32Array.from(m.weights, Math.abs).sort();
      this.clip = absPercentile(m.weights, Number(this.ui.clip.value), this.sortedAbs);
      this.order = columnOrder(m.weights, m.tokens, m.slots, this.ui.order.value, threshold);
      const image = new ImageData(m.slots, m.tokens);
      const pixels = new Uint32Array(image.data.buffer);
      const { positive, negative } = colorTable(this.clip);
      const step = this.clip > 0 ? 255 / this.clip : 0;
      for (let t = 0; t < m.tokens; t++) {
        const row = t * m.slots;
        for (let x = 0; x < m.slots; x++) {
          const v = m.weights[row + this.order[x]];
          const q = Math.min(255, Math.round(Math.abs(v) * step));
          pixels[row + x] = Math.abs(v) < threshold ? positive[0] : v >= 0 ? positive[q] : negative[q];
        }
      }
      this.base = el('canvas', { width: m.slots, height: m.tokens });
      this.base.getContext('2d').putImageData(image, 0, 0);
      this.drawStrip();
      this.drawLegend();
      this.rows ??= rowStatistics(m.weights, m.tokens, m.slots);
      const s = { aboveShare: shareAbove(m.weights, threshold), ...this.rows };
      this.statistics = s;
      this.ui.stats.textContent = `${(100 * s.aboveShare).toFixed(1)} % of weights above the threshold · mean row entropy ` +
        `${s.entropy.toFixed(3)} nats · effective number of slots ${s.effectiveSlots.toFixed(1)} of ${m.slots}` +
        (this.grownFrom() !== null ? ` · slots ${this.grownFrom()}–${m.slots - 1} were added by growth (marked above the map)` : '');
      if (this.selectedSlot !== null) this.highlightTokens();
    }
    this.draw();
    this.frameTimes.push(performance.now() - started);
    if (this.frameTimes.length > 100) this.frameTimes.shift();
  }

  /** Where growth began for the open projection: slots from here on were added. */
  grownFrom() {
    const from = this.model?.growth?.[this.open?.proj];
    return Number.isInteger(from) && from < (this.map?.slots ?? 0) ? from : null;
  }

  draw() {
    const { canvas, strip } = this.ui;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#f0f1f4';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!this.base) return;
    // At zoom 1 the whole map fills the canvas; zooming scales both axes about the pointer.
    const cx = (canvas.width / this.map.slots) * this.view.zoom;
    const cy = (canvas.height / this.map.tokens) * this.view.zoom;
    this.scale = [cx, cy];
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.base, this.view.x, this.view.y, this.map.slots * cx, this.map.tokens * cy);
    if (this.selectedSlot !== null) {
      const x = this.order.indexOf(this.selectedSlot);
      ctx.strokeStyle = '#111';
      ctx.strokeRect(this.view.x + x * cx - 0.5, 0, Math.max(1, cx) + 1, canvas.height);
    }
    const sctx = strip.getContext('2d');
    strip.width = canvas.width;
    sctx.imageSmoothingEnabled = false;
    if (this.stripImage) sctx.drawImage(this.stripImage, this.view.x, 0, this.map.slots * cx, strip.height);
  }

  /** The marker strip over the map: grown slots in orange. */
  drawStrip() {
    const from = this.grownFrom();
    const image = el('canvas', { width: this.map.slots, height: 1 });
    const ctx = image.getContext('2d');
    ctx.fillStyle = '#d9dce3';
    ctx.fillRect(0, 0, this.map.slots, 1);
    if (from !== null) {
      ctx.fillStyle = '#e08a00';
      this.order.forEach((slot, x) => { if (slot >= from) ctx.fillRect(x, 0, 1, 1); });
    }
    this.stripImage = image;
  }

  drawLegend() {
    const { legend, legendText } = this.ui;
    const ctx = legend.getContext('2d');
    for (let x = 0; x < legend.width; x++) {
      const v = ((x / (legend.width - 1)) * 2 - 1) * this.clip;
      const [r, g, b] = divergingColor(v, this.clip, this.threshold);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(x, 0, 1, legend.height);
    }
    legendText.textContent = `θ from −${this.clip.toPrecision(3)} to +${this.clip.toPrecision(3)} (clipped); |θ| below ${this.threshold.toPrecision(3)} drawn white`;
  }

  /** The cell under a mouse event: { token, slot } or null. */
  cellAt(event) {
    if (!this.map || !this.scale) return null;
    const rect = this.ui.canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) * this.ui.canvas.width) / rect.width;
    const py = ((event.clientY - rect.top) * this.ui.canvas.height) / rect.height;
    const x = Math.floor((px - this.view.x) / this.scale[0]);
    const token = Math.floor((py - this.view.y) / this.scale[1]);
    if (x < 0 || x >= this.map.slots || token < 0 || token >= this.map.tokens) return null;
    return { token, slot: this.order[x] };
  }

  attachPanZoom() {
    const { canvas } = this.ui;
    let drag = null;
    canvas.addEventListener('wheel', (e) => {
      if (!this.map) return;
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      const px = ((e.clientX - rect.left) * canvas.width) / rect.width;
      const py = ((e.clientY - rect.top) * canvas.height) / rect.height;
      const factor = e.deltaY < 0 ? 1.25 : 0.8;
      const zoom = Math.min(512, Math.max(1, this.view.zoom * factor));
      const k = zoom / this.view.zoom;
      this.view = { zoom, x: px - (px - this.view.x) * k, y: py - (py - this.view.y) * k };
      this.redraw(false);
    }, { passive: false });
    canvas.addEventListener('mousedown', (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
    window.addEventListener('mouseup', () => { setTimeout(() => { drag = null; }); });
    canvas.addEventListener('mousemove', (e) => {
      if (drag && e.buttons) {
        const rect = canvas.getBoundingClientRect();
        const k = canvas.width / rect.width;
        this.view.x += (e.clientX - drag.x) * k;
        this.view.y += (e.clientY - drag.y) * k;
        drag.moved ||= Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 2;
        drag.x = e.clientX;
        drag.y = e.clientY;
        this.redraw(false);
        return;
      }
      const cell = this.cellAt(e);
      if (cell) this.showToken(cell.token, cell.slot);
    });
    canvas.addEventListener('click', (e) => {
      if (drag?.moved) return;
      const cell = this.cellAt(e);
      if (cell) this.selectSlot(cell.slot).catch((err) => this.fail(err));
    });
    canvas.addEventListener('dblclick', () => { this.view = { zoom: 1, x: 0, y: 0 }; this.redraw(false); });
  }

  /** The inspected tokens as text: hover one for its top-k, and the selected slot's users lit. */
  drawText() {
    const m = this.map;
    this.ui.text.replaceChildren(...m.texts.map((text, t) => {
      const span = el('span', { className: 'tfi-token', textContent: text, title: `token ${t}: id ${m.ids[t]}` });
      span.dataset.token = String(t);
      span.onmouseenter = () => this.showToken(t);
      return span;
    }));
    if (this.selectedSlot !== null) this.highlightTokens();
  }

  /** Token `t`'s top-k parameter tokens (the device-reduced summary) and, if given, one cell. */
  showToken(t, slot) {
    const m = this.map;
    const s = this.mapSummary(m.layer, m.proj);
    const rows = [];
    if (s) {
      for (let i = 0; i < s.k; i++) {
        const item = el('li', { textContent: `${i + 1}. slot ${s.top[t * s.k + i]}: ${s.values[t * s.k + i].toFixed(4)}` });
        Object.assign(item.dataset, { slot: String(s.top[t * s.k + i]), value: String(s.values[t * s.k + i]) });
        rows.push(item);
      }
    }
    const cell = slot === undefined ? '' : ` · slot ${slot}: θ = ${m.weights[t * m.slots + slot].toFixed(4)}`;
    const list = el('ol', { className: 'tfi-top' }, ...rows);
    list.dataset.token = String(t);
    this.ui.hover.replaceChildren(
      el('div', { textContent: `token ${t} “${visible(m.texts[t])}” (id ${m.ids[t]})${cell} — top ${s?.k ?? 0} parameter tokens:` }),
      list);
    for (const span of this.ui.text.children) span.classList.toggle('hovered', span.dataset.token === String(t));
  }

  /** Selects parameter token `slot` of the open map: lights the tokens that use it (weight above
   *  the threshold) and shows its dictionary. */
  async selectSlot(slot) {
    this.selectedSlot = slot;
    this.draw();
    const { layer, proj } = this.map;
    const grown = this.grownFrom() !== null && slot >= this.grownFrom() ? ' (added by growth)' : '';
    this.ui.slotInfo.replaceChildren(
      el('strong', { textContent: `Parameter token ${slot} of layer ${layer} ${proj}${grown}` }), ' ',
      this.actionButtons(layer, proj, slot),
      el('p', { className: 'tfi-users' }),
      el('p', { className: 'tfi-dictionary-box muted', textContent: 'Dictionary: loading…' }));
    this.highlightTokens();
    const entries = await this.client.dictionary(layer, proj, slot, DICTIONARY_SIZE);
    if (this.selectedSlot !== slot || this.map.layer !== layer || this.map.proj !== proj) return;
    const list = el('ol', { className: 'tfi-dictionary' }, ...entries.map((e) => {
      const item = el('li', { textContent: `“${visible(e.text)}” (${e.id}) ${e.score.toFixed(3)}`, title: 'Search: which parameter tokens point at this token' });
      item.onclick = () => this.search(e.id).catch((err) => this.fail(err));
      Object.assign(item.dataset, { id: String(e.id), score: String(e.score) });
      return item;
    }));
    this.ui.slotInfo.querySelector('.tfi-dictionary-box').replaceWith(el('div', { className: 'tfi-dictionary-box' },
      el('span', { className: 'muted', textContent: 'Dictionary (its value vector against the tied embedding): ' }), list));
    this.dispatchEvent(new CustomEvent('slot-select', { detail: { layer, proj, slot } }));
  }

  highlightTokens() {
    const m = this.map;
    if (!m || this.selectedSlot === null) return;
    const threshold = this.threshold;
    let max = 0;
    for (let t = 0; t < m.tokens; t++) max = Math.max(max, m.weights[t * m.slots + this.selectedSlot]);
    const users = [];
    for (const span of this.ui.text.children) {
      const t = Number(span.dataset.token);
      const v = m.weights[t * m.slots + this.selectedSlot];
      const uses = v > threshold;
      span.classList.toggle('uses', uses);
      span.style.setProperty('--weight', uses ? String(Math.min(1, v / max)) : '0');
      if (uses) users.push(t);
    }
    const p = this.ui.slotInfo.querySelector('.tfi-users');
    if (!p) return;
    p.dataset.tokens = users.join(',');
    p.textContent = `Used (θ > ${threshold.toPrecision(3)}) by ${users.length} of ${m.tokens} tokens, lit in the text above.`;
  }

  showAttention(a) {
    this.attentionMap = a;
    const { heads } = this.ui;
    heads.replaceChildren(...Array.from({ length: a.heads }, (_, h) => {
      const canvas = el('canvas', { width: 64, height: 64, title: `head ${h}` });
      this.drawAttention(canvas, h);
      const cell = el('button', { type: 'button', className: 'tfi-head' }, canvas, el('span', { textContent: `head ${h}` }));
      cell.onclick = () => this.showHead(h);
      return cell;
    }));
    this.showHead(this.head ?? 0);
  }

  showHead(h) {
    const a = this.attentionMap;
    this.head = Math.min(h, a.heads - 1);
    this.drawAttention(this.ui.attention, this.head);
    [...this.ui.heads.children].forEach((c, i) => c.classList.toggle('open', i === this.head));
    this.ui.attentionInfo.textContent = `Head ${this.head}: row = query token, column = key token (causal), white 0 to purple 1.`;
  }

  drawAttention(canvas, h) {
    const a = this.attentionMap;
    const n = a.tokens;
    const image = new ImageData(n, n);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const p = a.probs[(h * n + q) * n + k];
        image.data.set([255 - 155 * p, 255 - 200 * p, 255 - 75 * p, 255].map(Math.round), (q * n + k) * 4);
      }
    }
    const base = el('canvas', { width: n, height: n });
    base.getContext('2d').putImageData(image, 0, 0);
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(base, 0, 0, canvas.width, canvas.height);
  }

  /** The open map as a PNG (one pixel per cell, as drawn), JSON or CSV (the numbers). */
  async exportBlob(kind) {
    const m = this.map;
    if (!m) throw new Error('open a map first');
    if (kind === 'PNG') return new Promise((resolve) => this.base.toBlob(resolve, 'image/png'));
    if (kind === 'JSON') {
      const weights = Array.from({ length: m.tokens }, (_, t) => Array.from(m.weights.subarray(t * m.slots, (t + 1) * m.slots)));
      const body = { layer: m.layer, proj: m.proj, ids: [...m.ids], tokens: m.texts, slots: m.slots, weights };
      return new Blob([JSON.stringify(body)], { type: 'application/json' });
    }
    const quote = (s) => `"${s.replaceAll('"', '""')}"`;
    const header = ['token_index', 'token_id', 'token', ...Array.from({ length: m.slots }, (_, s) => `slot_${s}`)].join(',');
    const lines = m.texts.map((text, t) => [t, m.ids[t], quote(text), ...m.weights.subarray(t * m.slots, (t + 1) * m.slots)].join(','));
    return new Blob([[header, ...lines].join('\n') + '\n'], { type: 'text/csv' });
  }

  async export(kind) {
    try {
      const m = this.map;
      download(await this.exportBlob(kind), `tokenformer-layer${m.layer}-${m.proj}.${kind.toLowerCase()}`);
    } catch (e) {
      this.fail(e);
    }
  }

  fail(e) {
    this.ui.status.textContent = `Inspector: ${e.message ?? e}`;
    this.dispatchEvent(new CustomEvent('inspector-error', { detail: { message: e.message ?? String(e) } }));
  }
}

if (!customElements.get('tokenformer-inspector')) customElements.define('tokenformer-inspector', TokenFormerInspector);
