/**
 * Enterprise-PKI join rule (enterprise-features row L "CA-gated join", "certificate templates"): a chain to
 * the network's CA bundle plus proof of possession, with required EKUs, SAN and subject constraints and CRL
 * revocation. External ID: "x509:<subject DN>" (stable across renewals, so RBAC pre-assignment keeps
 * working) or, with external_id "issuer_serial", "x509:<issuer DN>/<serial hex>" (one certificate).
 */
import { createHash } from 'node:crypto';
import type { X509Crl } from '@peculiar/x509';
import { refuse } from './errors.js';
import { checkPop } from './pop.js';
import type { CaRule } from './rules.js';
import type { JoinContext, JoinProof, VerifiedIdentity } from './types.js';
import { checkRevocation, EKU_OIDS, extendedKeyUsages, parsePemCertificates, parsePemCrls, parsePresentedChain, subjectAltNames, validateChain, type ParsedCert } from './x509.js';

export interface CaDeps {
  now: () => number;
  popMaxSkewMs: number;
  parsed: Map<string, ParsedCaConfig>;
}

export interface ParsedCaConfig {
  roots: ParsedCert[];
  intermediates: ParsedCert[];
  crls: X509Crl[];
}

function parsedConfig(rule: CaRule, deps: CaDeps): ParsedCaConfig {
  const key = createHash('sha256').update(rule.roots).update('\0').update(rule.intermediates ?? '').update('\0').update((rule.crls ?? []).join('\0')).digest('base64');
  let c = deps.parsed.get(key);
  if (!c) {
    try {
      c = {
        roots: parsePemCertificates(rule.roots),
        intermediates: rule.intermediates ? parsePemCertificates(rule.intermediates) : [],
        crls: (rule.crls ?? []).flatMap((p) => parsePemCrls(p)),
      };
    } catch (err) {
      refuse('internal_error', `the network's CA rule no longer parses: ${(err as Error).message}`);
    }
    if (deps.parsed.size >= 256) deps.parsed.delete(deps.parsed.keys().next().value!);
    deps.parsed.set(key, c);
  }
  return c;
}

function dnsMatches(name: string, suffix: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return n === suffix || n.endsWith(`.${suffix}`);
}

export async function verifyCa(rule: CaRule, proof: JoinProof, ctx: JoinContext, deps: CaDeps): Promise<VerifiedIdentity> {
  const cfg = parsedConfig(rule, deps);
  const chain = parsePresentedChain(proof.cert_chain!);
  const leaf = chain[0]!;
  const now = deps.now();
  const path = validateChain(chain, { now, anchors: cfg.roots, extraIntermediates: cfg.intermediates, requireLeafKeyUsage: false });
  await checkRevocation(path, cfg.crls, now, rule.require_crl ?? false);

  if (rule.eku) {
    const have = extendedKeyUsages(leaf);
    for (const want of rule.eku) {
      const oid = EKU_OIDS[want] ?? want;
      if (!have || !have.includes(oid)) refuse('eku_missing', `certificate lacks extended key usage ${want}`);
    }
  }
  const san = subjectAltNames(leaf);
  if (rule.san?.dns_suffixes) {
    const sfx = rule.san.dns_suffixes;
    if (san.dns.length === 0 || !san.dns.every((d) => sfx.some((s) => dnsMatches(d, s)))) refuse('san_mismatch', `every DNS SAN must be under ${sfx.join(', ')}`);
  }
  if (rule.san?.email_domains) {
    const doms = rule.san.email_domains;
    if (san.email.length === 0 || !san.email.every((e) => doms.includes(e.slice(e.lastIndexOf('@') + 1).toLowerCase()))) refuse('san_mismatch', `every email SAN must be in ${doms.join(', ')}`);
  }
  if (rule.san?.uri_prefixes) {
    const pre = rule.san.uri_prefixes;
    if (san.uri.length === 0 || !san.uri.every((u) => pre.some((p) => u.startsWith(p)))) refuse('san_mismatch', `every URI SAN must start with ${pre.join(', ')}`);
  }
  if (rule.subject) {
    for (const [attr, want] of Object.entries(rule.subject)) {
      const have = leaf.px.subjectName.getField(attr);
      if (!have.includes(want)) refuse('subject_mismatch', `subject ${attr} is not ${JSON.stringify(want)}`);
    }
  }
  checkPop(leaf.node.publicKey, proof.pop_signature, ctx, now, deps.popMaxSkewMs);

  const subject = leaf.px.subject;
  const issuerDn = leaf.px.issuer;
  const serial = leaf.px.serialNumber.toLowerCase();
  return {
    externalId: rule.external_id === 'issuer_serial' ? `x509:${issuerDn}/${serial}` : `x509:${subject}`,
    kind: 'ca',
    subject,
    issuer: issuerDn,
    groups: leaf.px.subjectName.getField('OU'),
    claims: { serial, san_dns: san.dns, san_email: san.email, san_uri: san.uri, root: path[path.length - 1]!.px.subject },
    expiresAt: leaf.px.notAfter.getTime(),
  };
}
