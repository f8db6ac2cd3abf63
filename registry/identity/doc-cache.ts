/**
 * Cache of fetched JSON documents (OIDC discovery, JWKS, SPIFFE bundles), one entry per URL and kind, so
 * a registry can serve many issuers at once (v1 keeps a single global JWKS URL). Fresh for `ttlMs`;
 * `refresh()` (used on an unknown `kid`) refetches at most once per `refetchCooldownMs` per URL, so a flood
 * of random kids costs the IdP nothing; concurrent misses share one fetch; a failed fetch is remembered for
 * the cooldown (no hammering a broken IdP) and a stale copy is served for up to `maxStaleMs` if the IdP is down.
 */
import type { Logger } from 'pino';

export interface DocCacheOptions {
  clock: () => number;
  ttlMs: number;
  refetchCooldownMs: number;
  maxStaleMs: number;
  maxEntries: number;
  log?: Logger;
}

interface Entry<T> {
  value?: T;
  fetchedAt: number;
  lastAttemptAt: number;
  lastError?: unknown;
  inflight?: Promise<T>;
}

export class DocCache {
  private readonly entries = new Map<string, Entry<unknown>>();
  fetches = 0;
  evictions = 0;
  private warnedFull = false;

  constructor(private readonly opts: DocCacheOptions) {}

  /** The cached document, fetching it if absent or older than the TTL. */
  async get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.opts.clock();
    const e = this.entries.get(key) as Entry<T> | undefined;
    if (e?.value !== undefined && now - e.fetchedAt < this.opts.ttlMs) return e.value;
    if (e?.inflight) return e.inflight;
    if (e && e.lastError !== undefined && now - e.lastAttemptAt < this.opts.refetchCooldownMs) {
      if (e.value !== undefined && now - e.fetchedAt < this.opts.maxStaleMs) return e.value;
      throw e.lastError;
    }
    return this.fetch(key, load, true);
  }

  /** Refetch now unless this key was fetched within the cooldown; returns null when throttled or failed. */
  async refresh<T>(key: string, load: () => Promise<T>): Promise<T | null> {
    const now = this.opts.clock();
    const e = this.entries.get(key) as Entry<T> | undefined;
    if (e?.inflight) return e.inflight.catch(() => null);
    if (e && now - e.lastAttemptAt < this.opts.refetchCooldownMs) return null;
    try {
      return await this.fetch(key, load, false);
    } catch {
      return null;
    }
  }

  private fetch<T>(key: string, load: () => Promise<T>, serveStale: boolean): Promise<T> {
    let e = this.entries.get(key) as Entry<T> | undefined;
    if (!e) {
      e = { fetchedAt: 0, lastAttemptAt: 0 };
      this.insert(key, e as Entry<unknown>);
    }
    const entry = e;
    entry.lastAttemptAt = this.opts.clock();
    this.fetches++;
    const p = load().then(
      (value) => {
        entry.value = value;
        entry.fetchedAt = this.opts.clock();
        entry.lastError = undefined;
        entry.inflight = undefined;
        return value;
      },
      (err: unknown) => {
        entry.lastError = err;
        entry.inflight = undefined;
        if (serveStale && entry.value !== undefined && this.opts.clock() - entry.fetchedAt < this.opts.maxStaleMs) {
          this.opts.log?.warn({ key, err: (err as Error)?.message }, 'identity document refetch failed; serving the stale copy');
          return entry.value;
        }
        throw err;
      },
    );
    entry.inflight = p;
    return p;
  }

  private insert(key: string, e: Entry<unknown>): void {
    if (this.entries.size >= this.opts.maxEntries) {
      // Oldest insertion goes first; entries are cheap to refetch.
      this.entries.delete(this.entries.keys().next().value!);
      this.evictions++;
      if (!this.warnedFull) {
        this.warnedFull = true;
        this.opts.log?.warn({ maxEntries: this.opts.maxEntries }, 'identity document cache full; evicting oldest');
      }
    }
    this.entries.set(key, e);
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    this.entries.clear();
  }
}
