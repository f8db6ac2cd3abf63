/**
 * Outbound HTTP for identity checks (OIDC discovery, JWKS, SPIFFE bundle endpoints, webhooks): a timeout,
 * a byte cap enforced while reading, no redirects, and an SSRF guard that checks every address the name
 * resolves to (in the socket's own lookup, so DNS rebinding between check and connect is impossible).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { refuse } from './errors.js';

const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['2001:db8::', 32], ['100::', 64],
] as const) blocked.addSubnet(net, bits, 'ipv6');

/** True for loopback, private, link-local, CGNAT, multicast, documentation and unspecified addresses. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return blocked.check(mapped[1]!, 'ipv4');
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
    if (hex) {
      const hi = parseInt(hex[1]!, 16);
      const lo = parseInt(hex[2]!, 16);
      return blocked.check(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, 'ipv4');
    }
    return blocked.check(address, 'ipv6');
  }
  return true; // not an IP at all: refuse rather than guess
}

export interface FetchPolicy {
  timeoutMs: number;
  maxBytes: number;
  allowPrivate: boolean;
  allowHttp: boolean;
  signal?: AbortSignal;
}

export interface FetchRequest {
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: Buffer;
}

export interface FetchResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** Check a URL against the policy before any I/O. */
export function checkUrl(url: string, policy: Pick<FetchPolicy, 'allowHttp' | 'allowPrivate'>): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    refuse('url_not_allowed', 'not a valid URL');
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && policy.allowHttp)) refuse('url_not_allowed', `${u.protocol}// URLs are not allowed (https only)`);
  if (u.username || u.password) refuse('url_not_allowed', 'URLs with credentials are not allowed');
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (!policy.allowPrivate) {
    if (isIP(host) && isPrivateAddress(host)) refuse('url_not_allowed', `${host} is a private or loopback address`);
    if (host === 'localhost' || host.endsWith('.localhost')) refuse('url_not_allowed', `${host} is a loopback name`);
  }
  return u;
}

/** One bounded request. Rejects only with IdentityVerificationError (url_not_allowed / fetch_*). */
export function boundedFetch(url: string, req: FetchRequest, policy: FetchPolicy): Promise<FetchResponse> {
  const u = checkUrl(url, policy);
  return new Promise<FetchResponse>((resolve, reject) => {
    let settled = false;
    const fail = (code: 'fetch_failed' | 'fetch_timeout' | 'fetch_too_large' | 'url_not_allowed', msg: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      policy.signal?.removeEventListener('abort', onAbort);
      r.destroy();
      try {
        refuse(code, msg);
      } catch (e) {
        reject(e);
      }
    };
    const guardedLookup = (hostname: string, options: object, cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void => {
      dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return cb(err, '', 0);
        const list = addresses as LookupAddress[];
        if (!policy.allowPrivate && list.some((a) => isPrivateAddress(a.address))) {
          const e: NodeJS.ErrnoException = new Error(`${hostname} resolves to a private address`);
          e.code = 'EPRIVATE';
          return cb(e, '', 0);
        }
        if ((options as { all?: boolean }).all) cb(null, list);
        else cb(null, list[0]!.address, list[0]!.family);
      });
    };
    const doRequest = u.protocol === 'https:' ? httpsRequest : httpRequest;
    const r = doRequest(
      u,
      {
        method: req.method ?? 'GET',
        headers: { accept: 'application/json', ...(req.headers ?? {}), ...(req.body ? { 'content-length': String(req.body.length) } : {}) },
        lookup: guardedLookup as never,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > policy.maxBytes) return fail('fetch_too_large', `response declares ${declared} bytes (cap ${policy.maxBytes})`);
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > policy.maxBytes) return fail('fetch_too_large', `response larger than ${policy.maxBytes} bytes`);
          chunks.push(c);
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          policy.signal?.removeEventListener('abort', onAbort);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', (e) => fail('fetch_failed', `reading ${u.host}: ${e.message}`));
        res.on('aborted', () => fail('fetch_failed', `${u.host} aborted the response`));
      },
    );
    const timer = setTimeout(() => fail('fetch_timeout', `${u.host} did not answer within ${policy.timeoutMs} ms`), policy.timeoutMs);
    const onAbort = (): void => fail('fetch_failed', 'verifier closed');
    if (policy.signal?.aborted) return onAbort();
    policy.signal?.addEventListener('abort', onAbort, { once: true });
    r.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPRIVATE') fail('url_not_allowed', e.message);
      else fail('fetch_failed', `${u.host}: ${e.code ?? e.message}`);
    });
    r.end(req.body);
  });
}

/** GET a JSON document: non-200 and non-JSON are errors. */
export async function fetchJson(url: string, policy: FetchPolicy): Promise<unknown> {
  const res = await boundedFetch(url, {}, policy);
  if (res.status !== 200) refuse('fetch_http_status', `${new URL(url).host} answered HTTP ${res.status}`);
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    refuse('fetch_invalid_json', `${new URL(url).host} did not answer JSON`);
  }
}
