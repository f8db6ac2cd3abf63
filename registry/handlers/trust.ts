import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type { PollHandshakesOk, ReportTrustOk, RequestHandshakeOk, RespondHandshakeOk, RevokeTrustOk, SubscribeOk } from '../protocol/messages.js';
import { optString, reqBool, reqNodeId, signedFields } from '../protocol/validate.js';
import type { Mutation } from '../store/types.js';
import type { Handler } from './context.js';

/**
 * Trust links and the relayed handshake (wire reference §1.10, §1.11), plus push subscriptions.
 *
 * Consent model (SPEC §6 "private stays private"): v1 let either side alone create a trust pair, so
 * any node could report trust with a private node and then resolve its endpoint. Here each side's
 * consent is recorded separately and a link grants `resolve`/`punch` only when both consented.
 * A node consents to a peer by `report_trust`, by sending it a `request_handshake`, or by answering
 * its request with `respond_handshake(accept)`. The usual v1 flows therefore still end in a mutual
 * link: A requests (A consents) → B approves (report_trust / respond accept: B consents). Rejecting
 * or revoking removes the link (both consents).
 */

const MAX_JUSTIFICATION = 1024;

const reportTrust: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<ReportTrustOk> {
    const id = reqNodeId(m);
    const peer = reqNodeId(m, 'peer_id');
    if (id === peer) throw new RegistryError('bad_request', 'peer_id must differ from node_id');
    await ctx.verifyNode(id, challenges.reportTrust(id, peer), signedFields(m));
    ctx.state.requireNode(peer, 'peer');
    const { mutations, mutual } = ctx.state.consent(id, peer, ctx.nowSec());
    await ctx.commit(mutations);
    ctx.metrics.trustReports.inc();
    return { type: 'report_trust_ok', node_id: id, peer_id: peer, mutual };
  },
};

const revokeTrust: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<RevokeTrustOk> {
    const id = reqNodeId(m);
    const peer = reqNodeId(m, 'peer_id');
    await ctx.verifyNode(id, challenges.revokeTrust(id, peer), signedFields(m));
    if (!ctx.state.link(id, peer)) throw new RegistryError('not_found', `no trust link between ${id} and ${peer}`);
    await ctx.commit(ctx.state.removeLink(id, peer));
    ctx.metrics.trustRevocations.inc();
    ctx.publish(peer, { type: 'push', event: 'trust_revoked', node_id: peer, from_node_id: id, timestamp: ctx.nowSec() });
    return { type: 'revoke_trust_ok', node_id: id, peer_id: peer };
  },
};

const requestHandshake: Handler = {
  category: 'handshake',
  async handle(ctx, m): Promise<RequestHandshakeOk> {
    const from = reqNodeId(m, 'from_node_id');
    const to = reqNodeId(m, 'to_node_id');
    const justification = optString(m, 'justification', MAX_JUSTIFICATION) ?? '';
    if (from === to) throw new RegistryError('bad_request', 'to_node_id must differ from from_node_id');
    await ctx.verifyNode(from, challenges.requestHandshake(from, to), signedFields(m), 'from_node');
    ctx.state.requireNode(to, 'to_node');
    if (ctx.state.hasRequest(to, from)) throw new RegistryError('conflict', `a handshake request from ${from} to ${to} is already pending`);
    const nowMs = ctx.nowMs();
    const mutations = ctx.state.addRequest({ toId: to, fromId: from, justification, ts: nowMs }); // throws at the cap, before any change
    mutations.push(...ctx.state.consent(from, to, Math.floor(nowMs / 1000)).mutations);
    await ctx.commit(mutations);
    ctx.metrics.handshakeRequests.inc();
    ctx.publish(to, { type: 'push', event: 'handshake_request', node_id: to, from_node_id: from, justification, timestamp: Math.floor(nowMs / 1000) });
    return { type: 'request_handshake_ok', status: 'delivered' };
  },
};

const pollHandshakes: Handler = {
  category: 'handshake',
  async handle(ctx, m): Promise<PollHandshakesOk> {
    const id = reqNodeId(m);
    await ctx.verifyNode(id, challenges.pollHandshakes(id), signedFields(m));
    const { requests, responses, mutations } = ctx.state.takeInbox(id);
    await ctx.commit(mutations);
    return {
      type: 'poll_handshakes_ok',
      requests: requests.map((r) => ({ from_node_id: r.fromId, justification: r.justification, timestamp: Math.floor(r.ts / 1000) })),
      responses: responses.map((r) => ({ from_node_id: r.fromId, accept: r.accept, timestamp: Math.floor(r.ts / 1000) })),
    };
  },
};

const respondHandshake: Handler = {
  category: 'handshake',
  async handle(ctx, m): Promise<RespondHandshakeOk> {
    const id = reqNodeId(m);
    const peer = reqNodeId(m, 'peer_id');
    const accept = reqBool(m, 'accept');
    if (id === peer) throw new RegistryError('bad_request', 'peer_id must differ from node_id');
    await ctx.verifyNode(id, challenges.respondHandshake(id, peer), signedFields(m));
    ctx.state.requireNode(peer, 'peer');
    const nowMs = ctx.nowMs();
    const mutations: Mutation[] = ctx.state.addResponse({ toId: peer, fromId: id, accept, ts: nowMs });
    if (ctx.state.hasRequest(id, peer)) mutations.push({ kind: 'hs_request_delete', toId: id, fromId: peer });
    ctx.state.dropRequest(id, peer);
    if (accept) {
      mutations.push(...ctx.state.consent(id, peer, Math.floor(nowMs / 1000)).mutations);
      ctx.metrics.trustReports.inc();
    } else {
      mutations.push(...ctx.state.removeLink(id, peer));
    }
    await ctx.commit(mutations);
    ctx.publish(peer, { type: 'push', event: 'handshake_response', node_id: peer, from_node_id: id, accept, timestamp: Math.floor(nowMs / 1000) });
    return { type: 'respond_handshake_ok', accept, peer_id: peer };
  },
};

/**
 * `subscribe`: turn this connection into a push channel for the signing node (SPEC §6). The reply
 * is written before any push frame; `pending` tells the daemon whether to poll right away.
 */
const subscribe: Handler = {
  category: 'subscribe',
  async handle(ctx, m, conn): Promise<SubscribeOk> {
    const id = reqNodeId(m);
    await ctx.verifyNode(id, challenges.subscribe(id), signedFields(m));
    conn.subscribe(id);
    return { type: 'subscribe_ok', node_id: id, keepalive_ms: ctx.settings.keepaliveMs, pending: ctx.pending(id) };
  },
};

export const trustHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['report_trust', reportTrust],
  ['revoke_trust', revokeTrust],
  ['request_handshake', requestHandshake],
  ['poll_handshakes', pollHandshakes],
  ['respond_handshake', respondHandshake],
  ['subscribe', subscribe],
];
