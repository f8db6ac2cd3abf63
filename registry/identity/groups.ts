/**
 * Group-to-network mapping: which networks an identity's groups entitle it to (issue 6, "use IdP groups
 * with no second group store"). Keys are group names/DNs as the verifier reports them; the key "*" applies
 * to every verified identity. Matching is exact unless `caseInsensitive` (use it for LDAP DNs).
 * Returns the union of mapped networks in mapping order, without duplicates.
 */
export function networksForGroups<T extends number | string>(
  mapping: Readonly<Record<string, readonly T[]>>,
  groups: readonly string[],
  opts: { caseInsensitive?: boolean } = {},
): T[] {
  const norm = (s: string): string => (opts.caseInsensitive ? s.toLowerCase() : s);
  const have = new Set(groups.map(norm));
  const out: T[] = [];
  const seen = new Set<T>();
  for (const key of Object.keys(mapping)) {
    if (key !== '*' && !have.has(norm(key))) continue;
    const nets = mapping[key];
    if (!Array.isArray(nets)) continue;
    for (const n of nets) {
      if (!seen.has(n)) {
        seen.add(n);
        out.push(n);
      }
    }
  }
  return out;
}
