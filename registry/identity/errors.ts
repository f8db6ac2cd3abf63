import { PilotError } from '../../transport/errors.js';

/** A join rule that cannot be used: bad JSON shape, bad URL, unparsable PEM, unknown field. */
export class IdentityRuleError extends PilotError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('bad_identity_rule', message, options);
  }
}

/**
 * Why a proof was refused. Stable, machine-readable; the registry forwards it as the join error `code`.
 * Grouped by the step that failed; see README.md in this folder for what each one means.
 */
export type IdentityErrorCode =
  // proof shape / dispatch
  | 'bad_proof' | 'proof_missing' | 'verifier_closed' | 'internal_error'
  // outbound HTTP (OIDC discovery, JWKS, SPIFFE bundle endpoint, webhook)
  | 'url_not_allowed' | 'fetch_failed' | 'fetch_timeout' | 'fetch_http_status' | 'fetch_too_large' | 'fetch_invalid_json'
  | 'discovery_invalid' | 'discovery_issuer_mismatch' | 'jwks_invalid'
  // JWT (OIDC, JWT-SVID)
  | 'token_malformed' | 'token_alg_not_allowed' | 'token_alg_key_mismatch' | 'token_kid_unknown' | 'token_signature_invalid'
  | 'token_issuer_mismatch' | 'token_audience_mismatch' | 'token_expired' | 'token_missing_exp' | 'token_not_yet_valid'
  | 'token_too_old' | 'token_claim_invalid'
  // OIDC claim rules
  | 'tenant_mismatch' | 'email_domain_mismatch' | 'group_missing' | 'role_missing' | 'claim_mismatch'
  // X.509 (SPIFFE X.509-SVID, enterprise CA)
  | 'cert_malformed' | 'chain_too_long' | 'chain_untrusted' | 'cert_self_signed' | 'cert_expired' | 'cert_not_yet_valid'
  | 'cert_signature_invalid' | 'cert_algorithm_weak' | 'cert_not_ca' | 'path_len_exceeded' | 'leaf_is_ca'
  | 'key_usage_missing' | 'eku_missing' | 'critical_extension_unsupported' | 'san_mismatch' | 'subject_mismatch'
  | 'cert_revoked' | 'crl_invalid' | 'crl_stale' | 'crl_missing'
  | 'pop_missing' | 'pop_invalid' | 'pop_stale'
  // SPIFFE
  | 'spiffe_id_invalid' | 'spiffe_trust_domain_unknown' | 'spiffe_trust_domain_mismatch' | 'spiffe_id_not_allowed'
  | 'jwt_svid_not_accepted'
  // LDAP
  | 'ldap_user_invalid' | 'ldap_empty_password' | 'ldap_bind_failed' | 'ldap_user_ambiguous' | 'ldap_group_missing'
  | 'ldap_unavailable'
  // webhook
  | 'webhook_refused' | 'webhook_reply_invalid';

/** A proof that was refused. Every rejection from `IdentityVerifier.verify` is one of these. */
export class IdentityVerificationError extends PilotError {
  declare readonly code: IdentityErrorCode;
  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Short helper so verifier modules read as a list of checks. */
export function refuse(code: IdentityErrorCode, message: string, cause?: unknown): never {
  throw new IdentityVerificationError(code, message, cause === undefined ? undefined : { cause });
}
