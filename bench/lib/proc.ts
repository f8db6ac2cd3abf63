import { readdirSync, readFileSync } from 'node:fs';

/** Name and CPU seconds (user + system) from a /proc stat file; the name may contain spaces and parentheses. */
function readStat(path: string): { name: string; cpuSeconds: number } {
  const stat = readFileSync(path, 'utf8');
  const close = stat.lastIndexOf(')');
  const f = stat.slice(close + 2).split(' ');
  return { name: stat.slice(stat.indexOf('(') + 1, close), cpuSeconds: (Number(f[11]) + Number(f[12])) / 100 }; // clock ticks, USER_HZ = 100
}

/** CPU seconds (user + system, all threads) of a process, from /proc (Linux); NaN elsewhere. */
export function procCpuSeconds(pid: number | undefined): number {
  try {
    return readStat(`/proc/${pid}/stat`).cpuSeconds;
  } catch {
    return NaN;
  }
}

/** CPU seconds per thread (name:tid) of a process, from /proc (Linux); empty elsewhere. */
export function threadCpuSeconds(pid: number | undefined): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const s = readStat(`/proc/${pid}/task/${tid}/stat`);
        out.set(`${s.name}:${tid}`, s.cpuSeconds);
      } catch {
        // thread exited meanwhile
      }
    }
  } catch {
    // not Linux
  }
  return out;
}

/** Resident set size of a process in KiB, from /proc (Linux); 0 elsewhere. */
export function procRssKiB(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
