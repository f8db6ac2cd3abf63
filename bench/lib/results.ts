import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One figure in bench/results/latest.json (DESIGN.md "Benchmarks"). */
export interface BenchResult {
  id: string;
  value: number;
  unit: 'MB/s' | 'ops/s' | 'ms' | 'µs' | 'MiB' | '%' | 'x' | 'B';
  runs?: number[];
  note?: string;
}

export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Merge results into latest.json by id, so suites can run separately and still share one file. */
export async function writeResults(results: BenchResult[], file = join(RESULTS_DIR, 'latest.json')): Promise<string> {
  let previous: BenchResult[] = [];
  try {
    previous = (JSON.parse(await readFile(file, 'utf8')) as { results: BenchResult[] }).results ?? [];
  } catch {
    // first run
  }
  const byId = new Map(previous.map((r) => [r.id, r]));
  for (const r of results) byId.set(r.id, r);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify({ runAt: new Date().toISOString(), results: [...byId.values()] }, null, 2) + '\n');
  return file;
}

export function printTable(title: string, rows: Array<[string, string, string]>): void {
  const w0 = Math.max(...rows.map((r) => r[0].length), 10);
  const w1 = Math.max(...rows.map((r) => r[1].length), 8);
  console.log(`\n${title}`);
  for (const [a, b, c] of rows) console.log(`  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`);
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n);
}
