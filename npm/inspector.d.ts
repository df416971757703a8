// Types of <tokenformer-inspector> (tokenformer-web/inspector).
import type { TokenFormerClient, ModelInfo, InspectorView } from './index.js';
import type {
  Projection, PattentionSummary, PattentionCapture, AttentionCapture, Intervention, NextToken, SearchResult, LogitLens,
} from './pkg/tokenformer.js';

export const PROJECTIONS: readonly Projection[];
/** The factors the Knock out and Boost buttons apply (0 and 2). */
export const KNOCK_OUT: number;
export const BOOST: number;
/** `L:proj:slot=factor`, as the CLI's --intervene and the page's link write it. */
export function interventionText(i: Intervention): string;
export function parseIntervention(text: string): Intervention | null;

/** The next-token distribution after the inspected tokens without and (when any) with the interventions. */
export interface NextTokensView {
  key: string;
  without: NextToken[];
  with: NextToken[] | null;
  /** The engine's forward passes after the last one (null without interventions). */
  passes: number | null;
}

/** The inspector's colour for `v`: blue below zero, red above, white at 0 and below `threshold`. */
export function divergingColor(v: number, limit: number, threshold?: number): [number, number, number];
/** The `q`-quantile (0..1) of |values|. */
export function absPercentile(values: ArrayLike<number>, q: number, sorted?: Float32Array): number;
/** Mean row entropy and effective number of slots, each row read as |θ| / Σ|θ|. */
export function rowStatistics(weights: Float32Array, tokens: number, slots: number): { entropy: number; effectiveSlots: number };
export function shareAbove(weights: ArrayLike<number>, threshold: number): number;
export function columnOrder(weights: Float32Array, tokens: number, slots: number, order: 'index' | 'total' | 'first', threshold: number): number[];

export type ExportKind = 'PNG' | 'JSON' | 'CSV';

/**
 * The Pattention inspector: a grid of every layer × projection, one large Theta map with zoom and
 * pan, token top-k, slot users and dictionaries, attention per head, exports. Set `client` and
 * `model`, then call `inspect`. Events: 'inspected', 'map-open', 'slot-select', 'inspector-error', 'interventions-change', 'next-tokens', 'search', 'logit-lens'.
 */
export class TokenFormerInspector extends HTMLElement {
  /** The engine to inspect with (anything with TokenFormerClient's inspection methods). */
  client: Pick<TokenFormerClient, 'inspectView' | 'dictionary' | 'setInterventions' | 'nextTokens' | 'search' | 'logitLens'> | null;
  /** The loaded model's description (layers, heads, slots, growth), e.g. TokenFormerClient.load's result. */
  model: ModelInfo | null;
  /** Parameter tokens kept per token in the grid's summaries. */
  topK: number;
  readonly summary: (PattentionSummary & { texts?: string[] }) | undefined;
  readonly map: (PattentionCapture & { texts: string[] }) | null;
  readonly attentionMap: AttentionCapture | undefined;
  readonly selectedSlot: number | null;
  readonly busy: boolean;
  /** Weights at or below it are drawn white and do not count as "using" a slot. */
  threshold: number;
  /** Drawing times (ms) of the last redraws of the map. */
  readonly frameTimes: number[];
  /** Inspects `ids`, or without them the running generation's tokens (it goes on). Calls made
   *  while one runs are merged into one more update. */
  inspect(ids?: number[]): Promise<void>;
  openMap(layer: number, proj: Projection): Promise<void>;
  selectSlot(slot: number): Promise<void>;
  /** This map's summary (each token's top-k and the column sums), if the grid holds it. */
  mapSummary(layer: number, proj: Projection): PattentionSummary['maps'][number] | null;
  exportBlob(kind: ExportKind): Promise<Blob>;
  /** Downloads the open map as tokenformer-layer{L}-{proj}.{png,json,csv}. */
  export(kind: ExportKind): Promise<void>;
  /** The interventions in force (chips), ordered by layer, projection and slot. */
  interventions: Intervention[];
  readonly next: NextTokensView | null;
  readonly searchResult: SearchResult | null;
  readonly lens: (LogitLens & { texts: string[]; topTexts: string[] }) | null;
  /** Replaces the interventions; the engine applies them, chips and the next-token bars follow. */
  setInterventions(list: Intervention[]): Promise<void>;
  /** Adds one intervention (or changes its factor). */
  intervene(layer: number, proj: Projection, slot: number, factor: number): Promise<void>;
  removeIntervention(layer: number, proj: Projection, slot: number): Promise<void>;
  /** Lists the 20 value parameter tokens that point most at `token` (one token's text, or its id). */
  search(token: string | number): Promise<SearchResult>;
  /** Opens a map and selects one of its parameter tokens. */
  openSlot(layer: number, proj: Projection, slot: number): Promise<void>;
  /** Draws the logit lens of the inspected tokens (blocks × tokens, hover: top 5). */
  showLens(): Promise<LogitLens>;
}

export type { InspectorView };

declare global {
  interface HTMLElementTagNameMap {
    'tokenformer-inspector': TokenFormerInspector;
  }
  interface HTMLElementEventMap {
    inspected: CustomEvent<{ tokens: number }>;
    'map-open': CustomEvent<{ layer: number; proj: Projection }>;
    'slot-select': CustomEvent<{ layer: number; proj: Projection; slot: number }>;
    'inspector-error': CustomEvent<{ message: string }>;
    'interventions-change': CustomEvent<{ interventions: Intervention[] }>;
    'next-tokens': CustomEvent<NextTokensView>;
    search: CustomEvent<SearchResult>;
    'logit-lens': CustomEvent<{ layers: number; tokens: number }>;
  }
}
