/** A bound a figure is meant to stay within; `of` says whether it applies to the value or to the ratio. */
export interface Target {
  readonly of: 'value' | 'ratio';
  readonly op: '>=' | '<=';
  readonly bound: number;
}

/** A figure measured in the same run, that another figure is compared with. */
export interface Baseline {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
}

/** One line of the result table. */
export interface Row {
  readonly scenario: string;
  /** What was measured. */
  readonly name: string;
  /** null when the figure could not be measured here (see `note`). */
  readonly value: number | null;
  readonly unit: string;
  readonly baseline: Baseline | null;
  /** value ÷ baseline, or baseline ÷ value for times (so that above 1 is always better). */
  readonly ratio: number | null;
  readonly target: Target | null;
  readonly met: boolean | null;
  readonly note: string | null;
}

/** A scenario that did not run, or stopped on an error. */
export interface Outcome {
  readonly scenario: string;
  readonly status: 'done' | 'skipped' | 'failed';
  readonly seconds: number;
  readonly why: string | null;
}

export interface RowInput {
  readonly name: string;
  readonly value: number | null;
  readonly unit: string;
  readonly baseline?: Baseline | null;
  /**
   * How the ratio is formed: `higher` (value ÷ baseline, for rates), `lower`
   * (baseline ÷ value, for times), a number computed by the caller, or none.
   */
  readonly ratio?: 'higher' | 'lower' | number | null;
  readonly target?: Target | null;
  readonly note?: string | null;
}

/** Collects the rows of every scenario in the order they were measured. */
export class Results {
  readonly rows: Row[] = [];
  readonly outcomes: Outcome[] = [];

  /** `print` shows each row as it is added (stdout by default). */
  constructor(private readonly print: (line: string) => void = (line) => process.stdout.write(line)) {}

  /** Records a figure and prints it at once, so a long run shows progress. */
  add(scenario: string, input: RowInput): Row {
    const baseline = input.baseline ?? null;
    let ratio: number | null = null;
    if (typeof input.ratio === 'number') ratio = input.ratio;
    else if ((input.ratio === 'higher' || input.ratio === 'lower') && input.value !== null && baseline !== null && baseline.value > 0 && input.value > 0) {
      ratio = input.ratio === 'lower' ? baseline.value / input.value : input.value / baseline.value;
    }
    const target = input.target ?? null;
    let met: boolean | null = null;
    if (target) {
      const subject = target.of === 'ratio' ? ratio : input.value;
      if (subject !== null) met = target.op === '>=' ? subject >= target.bound : subject <= target.bound;
    }
    const row: Row = { scenario, name: input.name, value: input.value, unit: input.unit, baseline, ratio, target, met, note: input.note ?? null };
    this.rows.push(row);
    this.print(`  → ${describeRow(row)}\n`);
    return row;
  }

  /** Records a figure this machine or this version of rated cannot produce, and why. */
  unavailable(scenario: string, name: string, why: string, target: Target | null = null): Row {
    return this.add(scenario, { name, value: null, unit: '', target, note: `not available: ${why}` });
  }
}

/** One row as a sentence, for the progress output. */
function describeRow(r: Row): string {
  const value = r.value === null ? 'n/a' : formatValue(r.value, r.unit);
  const base = r.baseline ? ` (baseline ${r.baseline.name}: ${formatValue(r.baseline.value, r.baseline.unit)})` : '';
  const ratio = r.ratio === null ? '' : `, ratio ${formatRatio(r.ratio)}`;
  const target = r.target ? `, target ${formatTarget(r.target, r.unit)}: ${r.met === null ? 'n/a' : r.met ? 'met' : 'MISSED'}` : '';
  const note = r.note ? ` — ${r.note}` : '';
  return `${r.name}: ${value}${base}${ratio}${target}${note}`;
}

/** A number with its unit, rounded for people. */
export function formatValue(value: number, unit: string): string {
  let text: string;
  if (unit === 's') text = value < 0.01 ? `${(value * 1000).toFixed(2)} ms` : value < 10 ? `${value.toFixed(3)} s` : `${value.toFixed(1)} s`;
  else if (unit === 'ms') text = `${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;
  else if (unit === 'MB') text = `${value.toFixed(1)} MB`;
  else if (unit === '%') text = `${value.toFixed(2)} %`;
  else text = `${Math.abs(value) >= 100 ? Math.round(value).toLocaleString('en-US') : Number(value.toPrecision(3))} ${unit}`;
  return text.trim();
}

/** A ratio: two decimals below 10, a whole-number factor above. */
export function formatRatio(ratio: number): string {
  return ratio >= 10 ? `${Math.round(ratio).toLocaleString('en-US')}×` : ratio.toFixed(2);
}

export function formatTarget(t: Target, unit: string): string {
  const op = t.op === '>=' ? '≥' : '≤';
  return t.of === 'ratio' ? `ratio ${op} ${t.bound}` : `${op} ${formatValue(t.bound, unit)}`;
}

const HEAD = ['scenario', 'measurement', 'figure', 'baseline (same run)', 'ratio', 'target', 'met'];

function cells(r: Row): string[] {
  return [
    r.scenario,
    r.name,
    r.value === null ? 'n/a' : formatValue(r.value, r.unit),
    r.baseline ? `${formatValue(r.baseline.value, r.baseline.unit)} ${r.baseline.name}` : '',
    r.ratio === null ? '' : formatRatio(r.ratio),
    r.target ? formatTarget(r.target, r.unit) : '',
    r.met === null ? (r.target ? 'n/a' : '') : r.met ? 'yes' : 'NO',
  ];
}

/** The rows as an aligned plain-text table. */
export function textTable(rows: readonly Row[]): string {
  const body = rows.map(cells);
  const widths = HEAD.map((h, i) => Math.max(h.length, ...body.map((c) => (c[i] ?? '').length)));
  const line = (c: readonly string[]): string => c.map((s, i) => s.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note).map((r) => `  ${r.scenario} / ${r.name}: ${r.note}`);
  return [line(HEAD), line(widths.map((w) => '-'.repeat(w))), ...body.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}

/** The rows as a Markdown table, with notes as a list below it. */
export function markdownTable(rows: readonly Row[]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const out = [`| ${HEAD.join(' | ')} |`, `|${HEAD.map(() => '---').join('|')}|`];
  for (const r of rows) out.push(`| ${cells(r).map(esc).join(' | ')} |`);
  const notes = rows.filter((r) => r.note);
  if (notes.length) {
    out.push('');
    for (const r of notes) out.push(`- ${r.scenario} / ${r.name}: ${r.note}`);
  }
  return out.join('\n');
}
