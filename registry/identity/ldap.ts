/**
 * LDAP join rule (enterprise-features row L "LDAP bind"): simple-bind the user's credentials against the
 * directory (direct DN template, or search-then-bind through a service account), then check group
 * membership. User input is escaped (RFC 4514 in DNs, RFC 4515 in filters) and must be plain text; an empty
 * password is refused before any I/O (an empty simple bind is an anonymous bind that "succeeds").
 * Passwords never reach logs or error messages. External ID: "ldap:<user DN>".
 */
import { Client, InvalidCredentialsError, type Entry } from 'ldapts';
import type { ConnectionOptions } from 'node:tls';
import { isIP } from 'node:net';
import { IdentityVerificationError, refuse } from './errors.js';
import type { LdapRule } from './rules.js';
import type { VerifiedIdentity } from './types.js';

const MAX_USER = 256;
const MAX_PASSWORD = 1024;
const MAX_GROUPS = 1000;

/** RFC 4514 §2.4: escape an attribute value for use inside a DN string. */
export function escapeDnValue(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '\0') out += '\\00';
    else if ('\\"+,;<>='.includes(c)) out += `\\${c}`;
    else if ((i === 0 && (c === ' ' || c === '#')) || (i === v.length - 1 && c === ' ')) out += `\\${c}`;
    else out += c;
  }
  return out;
}

/** RFC 4515 §3: escape an assertion value for use inside a search filter. */
export function escapeFilterValue(v: string): string {
  return v.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function validUser(user: unknown): string {
  if (typeof user !== 'string' || user.length === 0) refuse('ldap_user_invalid', 'ldap_user is required');
  if (user.length > MAX_USER) refuse('ldap_user_invalid', `ldap_user longer than ${MAX_USER} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(user)) refuse('ldap_user_invalid', 'ldap_user contains control characters');
  if (user.trim() !== user) refuse('ldap_user_invalid', 'ldap_user has leading or trailing spaces');
  return user;
}

function normDn(dn: string): string {
  return dn.toLowerCase().replace(/\s*([,=+])\s*/g, '$1').trim();
}

/** The value of the first RDN ("cn=agents,ou=groups" → "agents"). */
function firstRdnValue(dn: string): string {
  const m = /^[^=]+=((?:\\.|[^,+\\])*)/.exec(dn);
  return m ? m[1]!.replace(/\\(.)/g, '$1').trim() : dn;
}

function isUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string; name?: string };
  if (typeof e?.code === 'string') return true; // ECONNREFUSED, ETIMEDOUT, ERR_TLS_*, ENOTFOUND …
  return /timeout|timed out|connect|socket|tls|certificate/i.test(`${e?.name ?? ''} ${e?.message ?? ''}`);
}

export interface LdapDeps {
  defaultTimeoutMs: number;
  tlsOptions?: ConnectionOptions;
}

export async function verifyLdap(rule: LdapRule, user: unknown, password: unknown, deps: LdapDeps): Promise<VerifiedIdentity> {
  const name = validUser(user);
  if (typeof password !== 'string' || password.length === 0) refuse('ldap_empty_password', 'an empty password would be an anonymous bind: refused');
  if (password.length > MAX_PASSWORD) refuse('ldap_user_invalid', `password longer than ${MAX_PASSWORD} characters`);
  const timeout = rule.timeout_ms ?? deps.defaultTimeoutMs;
  // Name the host explicitly: ldapts' StartTLS would otherwise check the certificate against "localhost".
  const host = new URL(rule.url).hostname.replace(/^\[|\]$/g, '');
  const tls: ConnectionOptions = {
    minVersion: 'TLSv1.2',
    host,
    ...(isIP(host) ? {} : { servername: host }),
    ...(rule.tls_ca ? { ca: rule.tls_ca } : {}),
    ...(deps.tlsOptions ?? {}),
  };
  const clients: Client[] = [];
  const open = async (): Promise<Client> => {
    // ldapts wraps the socket in TLS whenever tlsOptions is given, so pass it only for ldaps://.
    const c = new Client({ url: rule.url, timeout, connectTimeout: timeout, strictDN: false, ...(rule.url.startsWith('ldaps:') ? { tlsOptions: tls } : {}) });
    clients.push(c);
    if (rule.start_tls) await c.startTLS(tls);
    return c;
  };
  try {
    let userDn: string;
    let searcher: Client;
    if (rule.user_dn_template) {
      userDn = rule.user_dn_template.replace('{user}', escapeDnValue(name));
      const c = await open();
      await bindUser(c, userDn, password);
      searcher = c;
    } else {
      const s = rule.search!;
      searcher = await open();
      try {
        await searcher.bind(s.bind_dn, s.bind_password);
      } catch (err) {
        throw new IdentityVerificationError('ldap_unavailable', 'the directory refused the service account bind (check search.bind_dn / bind_password)', { cause: stripCause(err) });
      }
      let entries: Entry[];
      try {
        ({ searchEntries: entries } = await searcher.search(s.base, { scope: s.scope ?? 'sub', filter: s.filter.replace('{user}', escapeFilterValue(name)), attributes: ['1.1'], sizeLimit: 2 }));
      } catch (err) {
        if ((err as { code?: unknown }).code === 4) refuse('ldap_user_ambiguous', 'the user search matches more than one entry');
        throw err;
      }
      if (entries.length === 0) refuse('ldap_bind_failed', 'invalid user name or password');
      if (entries.length > 1) refuse('ldap_user_ambiguous', 'the user search matches more than one entry');
      userDn = entries[0]!.dn;
      await bindUser(await open(), userDn, password);
    }

    const groups = rule.groups ? await groupsOf(searcher, rule, userDn) : [];
    if (rule.groups && rule.groups.required.length > 0) {
      const want = rule.groups.required;
      const ok = groups.some((g) => want.some((w) => normDn(w) === normDn(g) || w.toLowerCase() === firstRdnValue(g).toLowerCase()));
      if (!ok) refuse('ldap_group_missing', `user is in none of the required groups`);
    }
    return { externalId: `ldap:${userDn}`, kind: 'ldap', subject: userDn, issuer: new URL(rule.url).host, groups };
  } catch (err) {
    if (err instanceof IdentityVerificationError) throw err;
    if (isUnavailable(err)) throw new IdentityVerificationError('ldap_unavailable', `directory unreachable or too slow (${(err as Error)?.name ?? 'error'})`, { cause: stripCause(err) });
    throw new IdentityVerificationError('ldap_bind_failed', 'the directory refused the request', { cause: stripCause(err) });
  } finally {
    await Promise.all(clients.map((c) => c.unbind().catch(() => undefined)));
  }
}

async function bindUser(c: Client, dn: string, password: string): Promise<void> {
  try {
    await c.bind(dn, password);
  } catch (err) {
    if (err instanceof InvalidCredentialsError || typeof (err as { code?: unknown }).code === 'number') {
      refuse('ldap_bind_failed', 'invalid user name or password');
    }
    throw err;
  }
}

async function groupsOf(c: Client, rule: LdapRule, userDn: string): Promise<string[]> {
  const g = rule.groups!;
  if (g.mode === 'memberOf') {
    const { searchEntries } = await c.search(userDn, { scope: 'base', filter: '(objectClass=*)', attributes: ['memberOf'], sizeLimit: 1 });
    const v = searchEntries[0]?.memberOf;
    const list = Array.isArray(v) ? v : v === undefined ? [] : [v];
    return list.map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : String(x))).slice(0, MAX_GROUPS);
  }
  const dn = escapeFilterValue(userDn);
  const filter = `(|(&(objectClass=groupOfNames)(member=${dn}))(&(objectClass=groupOfUniqueNames)(uniqueMember=${dn})))`;
  const { searchEntries } = await c.search(g.base!, { scope: 'sub', filter, attributes: ['cn'], sizeLimit: MAX_GROUPS });
  return searchEntries.map((e) => e.dn);
}

/** Keep only the error class and code: ldapts messages never carry the password, but be sure. */
function stripCause(err: unknown): Error {
  const e = new Error((err as Error)?.name ?? 'error');
  (e as { code?: unknown }).code = (err as { code?: unknown })?.code;
  return e;
}
