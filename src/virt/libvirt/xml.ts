/**
 * A small, strict XML reader for libvirt's own well-formed output (domain XML); the escaper
 * for the XML we send is src/util/xml.ts's, re-exported here. No DTDs, no processing of namespaces beyond keeping prefixes.
 */

/** One parsed XML element: qualified name, attributes and text with entities decoded, child elements, and its source text. */
export interface XmlElement {
  /** Qualified name as written, e.g. `disk`, `oe:project`. */
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Concatenated text content directly inside this element (entities decoded). */
  text: string;
  /** The element's source text, from `<` to the end of its closing tag. */
  source: string;
}

/** XML that `parseXml` cannot read; the message gives the character offset. */
export class XmlParseError extends Error {
  constructor(message: string, at: number) {
    super(`${message} at offset ${at}`);
    this.name = 'XmlParseError';
  }
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/**
 * Decodes the five predefined entities and numeric character references; unknown entities are left as written.
 * A numeric reference beyond U+10FFFF throws RangeError.
 */
export function decodeEntities(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (whole, ent: string) => {
    if (ent.startsWith('#x')) return String.fromCodePoint(parseInt(ent.slice(2), 16));
    if (ent.startsWith('#')) return String.fromCodePoint(parseInt(ent.slice(1), 10));
    return ENTITIES[ent] ?? whole;
  });
}

/** The escaper for the XML we send lives in src/util/xml.ts (one for the whole code base). */
export { escapeXml } from '../../util/xml.js';

const NAME_RE = /[A-Za-z_:][-A-Za-z0-9_:.]*/y;
const ATTR_RE = /\s*([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/y;

/** Parse a document; returns its root element. */
export function parseXml(xml: string): XmlElement {
  let pos = 0;

  const skipMisc = (): void => {
    for (;;) {
      while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
      if (xml.startsWith('<?', pos)) {
        const end = xml.indexOf('?>', pos);
        if (end < 0) throw new XmlParseError('unterminated processing instruction', pos);
        pos = end + 2;
      } else if (xml.startsWith('<!--', pos)) {
        const end = xml.indexOf('-->', pos);
        if (end < 0) throw new XmlParseError('unterminated comment', pos);
        pos = end + 3;
      } else if (xml.startsWith('<!DOCTYPE', pos)) {
        const end = xml.indexOf('>', pos);
        if (end < 0) throw new XmlParseError('unterminated doctype', pos);
        pos = end + 1;
      } else {
        return;
      }
    }
  };

  const readName = (): string => {
    NAME_RE.lastIndex = pos;
    const m = NAME_RE.exec(xml);
    if (!m) throw new XmlParseError('expected a name', pos);
    pos = NAME_RE.lastIndex;
    return m[0];
  };

  const parseElement = (): XmlElement => {
    const start = pos;
    if (xml[pos] !== '<') throw new XmlParseError('expected <', pos);
    pos++;
    const name = readName();
    const attrs: Record<string, string> = {};
    for (;;) {
      ATTR_RE.lastIndex = pos;
      const m = ATTR_RE.exec(xml);
      if (!m) break;
      attrs[m[1]!] = decodeEntities(m[2] ?? m[3] ?? '');
      pos = ATTR_RE.lastIndex;
    }
    while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
    const el: XmlElement = { name, attrs, children: [], text: '', source: '' };
    if (xml.startsWith('/>', pos)) {
      pos += 2;
      el.source = xml.slice(start, pos);
      return el;
    }
    if (xml[pos] !== '>') throw new XmlParseError(`malformed start tag <${name}`, pos);
    pos++;
    let text = '';
    for (;;) {
      if (pos >= xml.length) throw new XmlParseError(`unclosed element <${name}>`, start);
      const lt = xml.indexOf('<', pos);
      if (lt < 0) throw new XmlParseError(`unclosed element <${name}>`, start);
      text += xml.slice(pos, lt);
      pos = lt;
      if (xml.startsWith('</', pos)) {
        pos += 2;
        const closing = readName();
        if (closing !== name) throw new XmlParseError(`</${closing}> closes <${name}>`, pos);
        while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
        if (xml[pos] !== '>') throw new XmlParseError('malformed end tag', pos);
        pos++;
        break;
      } else if (xml.startsWith('<!--', pos)) {
        const end = xml.indexOf('-->', pos);
        if (end < 0) throw new XmlParseError('unterminated comment', pos);
        pos = end + 3;
      } else if (xml.startsWith('<![CDATA[', pos)) {
        const end = xml.indexOf(']]>', pos);
        if (end < 0) throw new XmlParseError('unterminated CDATA', pos);
        // Keep CDATA raw: mark it so entity decoding below does not touch it.
        text += xml.slice(pos + 9, end).replace(/&/g, '&amp;');
        pos = end + 3;
      } else if (xml.startsWith('<?', pos)) {
        const end = xml.indexOf('?>', pos);
        if (end < 0) throw new XmlParseError('unterminated processing instruction', pos);
        pos = end + 2;
      } else {
        el.children.push(parseElement());
      }
    }
    el.text = decodeEntities(text);
    el.source = xml.slice(start, pos);
    return el;
  };

  skipMisc();
  const root = parseElement();
  skipMisc();
  if (pos !== xml.length) throw new XmlParseError('content after the root element', pos);
  return root;
}

/** The first child element named `name`. */
export function child(el: XmlElement | undefined, name: string): XmlElement | undefined {
  return el?.children.find((c) => c.name === name);
}

/** Every child element named `name` (exact qualified name), in document order; none for an undefined `el`. */
export function childrenNamed(el: XmlElement | undefined, name: string): XmlElement[] {
  return el ? el.children.filter((c) => c.name === name) : [];
}

/** Local part of a qualified name (`oe:project` → `project`). */
export function localName(name: string): string {
  const i = name.indexOf(':');
  return i < 0 ? name : name.slice(i + 1);
}

/** The namespace URI an element is in, from xmlns declarations on it or its ancestors. */
export function namespaceOf(el: XmlElement, ancestors: XmlElement[]): string | undefined {
  const i = el.name.indexOf(':');
  const attr = i < 0 ? 'xmlns' : `xmlns:${el.name.slice(0, i)}`;
  for (const e of [el, ...[...ancestors].reverse()]) {
    const v = e.attrs[attr];
    if (v !== undefined) return v;
  }
  return undefined;
}
