/**
 * Nova's `?name=` server filter, safely. Nova searches the name with the pattern as a regular
 * expression (`re.search`-like: unanchored, case-sensitive on its SQLite backend). A full
 * backtracking regex on user input can take exponential time (ReDoS), so this accepts the subset
 * clients send and matches it in linear passes:
 *
 * - literal text (`web-1`), searched anywhere in the name, as Nova;
 * - `.` (any one character) and `.*` (any run of characters);
 * - `^` at the start and `$` at the end (anchors);
 * - `\` followed by a punctuation character, for that character literally (`web\.1`).
 *
 * Any other regular-expression syntax (`[…]`, `(…)`, `|`, `+`, `?`, `{n}`, `*` not after `.`)
 * is refused with a 400 that names the subset, never matched differently from Nova.
 */
import { errors } from '../../../errors.js';

/** One character to match: a literal, or null for `.` (any character). */
type Token = string | null;

const SPECIAL = new Set(['[', ']', '(', ')', '{', '}', '|', '+', '?', '*']);

function unsupported(pattern: string): Error {
  return errors.invalidInput(
    `The name filter '${pattern}' uses regular-expression syntax this service does not evaluate: use text with '.', '.*', '^' at the start, '$' at the end and '\\' before a punctuation character.`,
  );
}

/** Parses `pattern` (see the module comment) into its anchors and the segments between `.*`. */
function parse(pattern: string): { start: boolean; end: boolean; segments: Token[][] } {
  const chars = Array.from(pattern);
  let start = false;
  let end = false;
  let i = 0;
  let n = chars.length;
  if (chars[0] === '^') {
    start = true;
    i = 1;
  }
  if (n > i && chars[n - 1] === '$' && chars[n - 2] !== '\\') {
    end = true;
    n -= 1;
  }
  const segments: Token[][] = [[]];
  while (i < n) {
    const c = chars[i]!;
    if (c === '\\') {
      const next = chars[i + 1];
      if (next === undefined || i + 1 >= n || /[\p{L}\p{N}\s]/u.test(next)) throw unsupported(pattern);
      segments.at(-1)!.push(next);
      i += 2;
      continue;
    }
    if (c === '.' && chars[i + 1] === '*' && i + 1 < n) {
      segments.push([]);
      i += 2;
      continue;
    }
    if (c === '.') {
      segments.at(-1)!.push(null);
      i += 1;
      continue;
    }
    if (SPECIAL.has(c) || c === '^' || c === '$') throw unsupported(pattern);
    segments.at(-1)!.push(c);
    i += 1;
  }
  return { start, end, segments };
}

function matchesAt(name: string[], seg: Token[], at: number): boolean {
  if (at < 0 || at + seg.length > name.length) return false;
  for (let k = 0; k < seg.length; k++) {
    const t = seg[k];
    if (t !== null && t !== name[at + k]) return false;
  }
  return true;
}

function find(name: string[], seg: Token[], from: number): number {
  for (let at = from; at + seg.length <= name.length; at++) if (matchesAt(name, seg, at)) return at;
  return -1;
}

/**
 * A predicate for Nova's `name` filter with `pattern` (see the module comment): whether a server
 * name contains a match. Throws InvalidInput (400) for syntax outside the subset. Each test is
 * O(name length × pattern length).
 */
export function nameFilter(pattern: string): (name: string) => boolean {
  const { start, end, segments } = parse(pattern);
  return (text: string) => {
    const name = Array.from(text);
    const last = segments.length - 1;
    let pos = 0;
    for (let s = 0; s <= last; s++) {
      const seg = segments[s]!;
      const anchoredStart = s === 0 && start;
      const anchoredEnd = s === last && end;
      if (anchoredStart && anchoredEnd) return name.length === seg.length && matchesAt(name, seg, 0);
      if (anchoredEnd) return name.length - seg.length >= pos && matchesAt(name, seg, name.length - seg.length);
      const at = anchoredStart ? (matchesAt(name, seg, 0) ? 0 : -1) : find(name, seg, pos);
      if (at < 0) return false;
      pos = at + seg.length;
    }
    return true;
  };
}
