import type { IdentityRule } from './rules.js';

/** What a node presents with `join_network` (all optional; the rule's kind says which are needed). */
export interface JoinProof {
  /** OIDC: the IdP's JWT (ID token or JWT access token). */
  oidc_token?: string;
  /** SPIFFE X.509-SVID: PEM leaf first, then intermediates. Needs pop_signature. */
  svid_chain?: string;
  /** SPIFFE JWT-SVID. */
  jwt_svid?: string;
  /** Enterprise PKI: PEM leaf first, then intermediates. Needs pop_signature. */
  cert_chain?: string;
  /** Base64 signature by the certificate's key over popChallenge(ctx). */
  pop_signature?: string;
  ldap_user?: string;
  ldap_password?: string;
  /** Opaque token forwarded to the identity webhook. */
  webhook_token?: string;
}

/** Facts from the signed join request that a proof is bound to. */
export interface JoinContext {
  networkId: number;
  nodeId: number;
  /** The node's Ed25519 public key (32 bytes) as registered. */
  nodePublicKey: Buffer;
  /** Unix ms from the signed join request. */
  ts: number;
}

export interface VerifiedIdentity {
  /** Stable ID for RBAC pre-assignment / directory sync: see README.md for the format per kind. */
  externalId: string;
  kind: IdentityRule['kind'];
  subject: string;
  issuer?: string;
  /** Groups usable with networksForGroups (per kind: IdP groups, LDAP groups, matched SPIFFE patterns, OUs). */
  groups: string[];
  claims?: Record<string, unknown>;
  /** Unix ms after which the proof is no longer valid (token exp, certificate notAfter). */
  expiresAt?: number;
}
