/**
 * The one XML escaper, for every piece of XML this code base writes (libvirt `<disk>` fragments,
 * the lab's domain XML, test fixtures).
 */

const ESCAPES: Readonly<Record<string, string>> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' };

/**
 * `s` escaped for XML text and for attribute values quoted with either quote: `<`, `>`, `&`, `"`
 * and `'` become the five predefined entities (XML 1.0 §2.4); nothing else changes.
 */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ESCAPES[c] ?? c);
}
