/**
 * OIDC rule templates for the identity providers enterprises run. Each returns a plain OidcRule the owner
 * can extend (groups, claims, …) before storing it; `parseIdentityRule` accepts every one of them.
 */
import type { OidcRule } from './rules.js';

function domainOf(d: string): string {
  return d.replace(/^https?:\/\//, '').replace(/\/+$/, '');
}

export const presets = {
  /** Microsoft Entra ID v2 tokens for one tenant (tid checked too). */
  entraId(tenantId: string, audience: string): OidcRule {
    return { kind: 'oidc', issuer: `https://login.microsoftonline.com/${tenantId}/v2.0`, audience, tenant: tenantId, algorithms: ['RS256'] };
  },
  /** Google ID tokens restricted to a Workspace domain (`hd`). */
  google(hostedDomain: string, audience: string): OidcRule {
    return { kind: 'oidc', issuer: 'https://accounts.google.com', audience, email_domains: [hostedDomain.toLowerCase()], algorithms: ['RS256'] };
  },
  /** Okta custom authorization server (default "default"); pass authServerId '' for the org server. */
  okta(domain: string, audience: string, authServerId = 'default'): OidcRule {
    const base = `https://${domainOf(domain)}`;
    return { kind: 'oidc', issuer: authServerId ? `${base}/oauth2/${authServerId}` : base, audience, algorithms: ['RS256'] };
  },
  /** Auth0: the issuer has a trailing slash. Namespaced group claims: set groups_claim. */
  auth0(domain: string, audience: string): OidcRule {
    return { kind: 'oidc', issuer: `https://${domainOf(domain)}/`, audience, algorithms: ['RS256'] };
  },
  /** Kubernetes projected service-account tokens from the cluster's OIDC issuer. */
  kubernetes(issuer: string, audience: string, opts: { jwksUri?: string; namespaces?: string[] } = {}): OidcRule {
    const r: OidcRule = { kind: 'oidc', issuer, audience, algorithms: ['RS256', 'ES256'] };
    if (opts.jwksUri) r.jwks_uri = opts.jwksUri;
    if (opts.namespaces?.length) r.claims = { 'kubernetes.io.namespace': opts.namespaces };
    return r;
  },
  /** Google-signed ID tokens of GCP service accounts (metadata server / Workload Identity). */
  gcpWorkloadIdentity(audience: string, serviceAccountEmails?: string[]): OidcRule {
    const r: OidcRule = { kind: 'oidc', issuer: 'https://accounts.google.com', audience, algorithms: ['RS256'] };
    if (serviceAccountEmails?.length) r.claims = { email: serviceAccountEmails, email_verified: true };
    return r;
  },
  /** Azure managed identity (v1 access tokens from IMDS), optionally limited to principal object IDs. */
  azureManagedIdentity(tenantId: string, audience: string, principalIds?: string[]): OidcRule {
    const r: OidcRule = { kind: 'oidc', issuer: `https://sts.windows.net/${tenantId}/`, audience, tenant: tenantId, algorithms: ['RS256'] };
    if (principalIds?.length) r.claims = { oid: principalIds };
    return r;
  },
  /** GitHub Actions OIDC, optionally limited to repositories ("owner/repo"). */
  githubActions(audience: string, repositories?: string[]): OidcRule {
    const r: OidcRule = { kind: 'oidc', issuer: 'https://token.actions.githubusercontent.com', audience, algorithms: ['RS256'] };
    if (repositories?.length) r.claims = { repository: repositories };
    return r;
  },
};
