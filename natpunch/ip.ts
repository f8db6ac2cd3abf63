import { isIPv4, isIPv6 } from 'node:net';

/**
 * IP text ⇄ bytes for the beacon (wire reference §1.9: "iplen ‖ IP") and STUN address attributes.
 * IPv4 and IPv4-mapped IPv6 both come out as 4 bytes ("IPv4 sent as 4 bytes when possible").
 */

/** Parse IP text into 4 or 16 bytes; null when the text is not an IP literal. Zone IDs (`%eth0`) are dropped. */
export function ipToBytes(text: string): Buffer | null {
  if (typeof text !== 'string') return null;
  if (isIPv4(text)) return ipv4Bytes(text);
  const zone = text.indexOf('%');
  const bare = zone >= 0 ? text.slice(0, zone) : text;
  if (!isIPv6(bare)) return null;
  const b16 = ipv6Bytes(bare);
  if (b16 === null) return null;
  return isV4Mapped(b16) ? Buffer.from(b16.subarray(12)) : b16;
}

/** 4 or 16 bytes → canonical text (dotted quad; RFC 5952 for IPv6). IPv4-mapped IPv6 becomes dotted quad. */
export function ipFromBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new RangeError(`IP must be 4 or 16 bytes, got ${bytes.length}`);
  if (isV4Mapped(bytes)) return ipFromBytes(bytes.subarray(12));
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952 §4.2: compress the longest run (≥ 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** `::ffff:1.2.3.4` → `1.2.3.4`; anything else unchanged. Lets dual-stack sockets compare with IPv4 config. */
export function unmapIPv4(address: string): string {
  if (address.length > 7 && address.charCodeAt(0) === 58 /* : */ && /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address)) {
    return address.slice(7);
  }
  return address;
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function ipv4Bytes(text: string): Buffer {
  const out = Buffer.allocUnsafe(4);
  const parts = text.split('.');
  for (let i = 0; i < 4; i++) out[i] = Number(parts[i]);
  return out;
}

/** `text` already passed isIPv6 (so its syntax is valid); expands `::` and a trailing dotted quad. */
function ipv6Bytes(text: string): Buffer | null {
  let head = text;
  let tailV4: Buffer | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) > lastColon) {
    tailV4 = ipv4Bytes(text.slice(lastColon + 1));
    head = text.slice(0, lastColon + 1) + '0:0'; // placeholder groups, overwritten below
  }
  const dbl = head.indexOf('::');
  let groups: string[];
  if (dbl >= 0) {
    const left = head.slice(0, dbl) === '' ? [] : head.slice(0, dbl).split(':');
    const right = head.slice(dbl + 2) === '' ? [] : head.slice(dbl + 2).split(':');
    const fill = 8 - left.length - right.length;
    if (fill < 0) return null;
    groups = [...left, ...new Array<string>(fill).fill('0'), ...right];
  } else {
    groups = head.split(':');
  }
  if (groups.length !== 8) return null;
  const out = Buffer.allocUnsafe(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i]!, 16), i * 2);
  if (tailV4) tailV4.copy(out, 12);
  return out;
}
