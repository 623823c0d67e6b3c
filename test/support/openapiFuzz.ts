/**
 * Hostile requests derived from an OpenAPI document, as fast-check arbitraries.
 *
 * `routesOf` reads the routes (method, path template, parameters, body schema) of a served
 * `/openapi.json`; `caseArb` turns one route into an arbitrary of `FuzzCase`s: mostly hostile
 * (wrong types, missing and extra fields, boundary and out-of-range numbers, odd strings and
 * encodings, duplicate keys, deep nesting, wrong content types, bodies where none belong,
 * oversized bodies, mutated URLs and methods, bad or missing tokens), with valid-looking values
 * mixed in so that a good share of the requests gets past validation into the services.
 *
 * Real ids (a seeded server, an attached volume, its current size) are not known when the
 * arbitrary is built and change while the fuzz runs, so a case holds `Ref`s that the caller
 * resolves against the service's state just before sending (`materialize`). Bodies are kept as
 * a small JSON tree (`Val`) so that they can hold what `JSON.stringify` cannot write: duplicate
 * keys (`Obj`), verbatim fragments such as `1e400` or `-0` (`Raw`), and those `Ref`s.
 */
import fc from 'fast-check';

// ---------------------------------------------------------------------------------------------
// The OpenAPI side

export interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  nullable?: boolean;
  items?: JsonSchema;
  minItems?: number;
}

export interface RouteParam {
  name: string;
  in: 'path' | 'query' | 'header';
  required: boolean;
  schema: JsonSchema;
}

export interface Route {
  api: string;
  method: string;
  /** The OpenAPI path template, e.g. `/v3/{project_id}/volumes/{volume_id}`. */
  path: string;
  params: RouteParam[];
  body: JsonSchema | undefined;
  /** Status codes the route documents. */
  responses: number[];
}

interface OpenApiOperation {
  parameters?: Array<{ name: string; in: string; required?: boolean; schema?: JsonSchema }>;
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
  responses?: Record<string, unknown>;
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

/** Every route and method of an OpenAPI 3 document. */
export function routesOf(api: string, doc: { paths?: Record<string, Record<string, OpenApiOperation>> }): Route[] {
  const out: Route[] = [];
  for (const [path, ops] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      if (!METHODS.includes(method)) continue;
      out.push({
        api,
        method: method.toUpperCase(),
        path,
        params: (op.parameters ?? [])
          .filter((p) => p.in === 'path' || p.in === 'query' || p.in === 'header')
          .map((p) => ({ name: p.name, in: p.in as RouteParam['in'], required: p.required ?? p.in === 'path', schema: p.schema ?? {} })),
        body: op.requestBody?.content?.['application/json']?.schema,
        responses: Object.keys(op.responses ?? {}).map(Number).filter(Number.isInteger),
      });
    }
  }
  return out;
}

export function routeLabel(r: Pick<Route, 'method' | 'path'>): string {
  return `${r.method} ${r.path}`;
}

// ---------------------------------------------------------------------------------------------
// Values

/** What a reference names, resolved against the running service just before sending. */
export type RefKind =
  | 'project'
  | 'otherProject'
  | 'server'
  | 'otherServer'
  | 'volume'
  | 'availableVolume'
  | 'attachedVolume'
  | 'otherVolume'
  | 'attachmentServer'
  | 'attachmentVolume'
  /** A server created through POST /servers (falls back to a seeded one while there is none). */
  | 'createdServer'
  | 'action'
  | 'bytesAbove'
  | 'gibAbove';

/** A value known only at run time: a real id, or a size relative to the volume the request is about. */
export class Ref {
  constructor(
    readonly kind: RefKind,
    /** Which one, modulo how many there are. */
    readonly i = 0,
    /** For sizes: bytes (or GiB) above the current size; may be 0 or negative. */
    readonly delta = 0,
  ) {}
  [fc.toStringMethod](): string {
    return `Ref(${this.kind}${this.i ? `#${this.i}` : ''}${this.delta ? `${this.delta > 0 ? '+' : ''}${this.delta}` : ''})`;
  }
}

/** A verbatim JSON text fragment (`1e400`, `-0`, `NaN`, a deep nesting, broken JSON). */
export class Raw {
  constructor(readonly text: string) {}
  [fc.toStringMethod](): string {
    return `Raw(${JSON.stringify(this.text.length > 80 ? `${this.text.slice(0, 80)}…(${this.text.length})` : this.text)})`;
  }
}

/** A JSON object as its entries, in order, duplicates allowed (the last one wins in JSON.parse). */
export class Obj {
  constructor(readonly entries: ReadonlyArray<readonly [string, Val]>) {}
  [fc.toStringMethod](): string {
    return `{${this.entries.map(([k, v]) => `${JSON.stringify(k)}: ${fc.stringify(v)}`).join(', ')}}`;
  }
}

export type Val = null | boolean | number | string | Val[] | Obj | Ref | Raw;

/** Resolves the references of one request; `current` is the size the request is about, if any. */
export interface Resolver {
  resolve(ref: Ref): string | number;
}

/** The JSON text of `v`, references resolved. Numbers JSON cannot write are written as JS does (`NaN`): malformed on purpose. */
export function jsonText(v: Val, r: Resolver): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => jsonText(x, r)).join(',')}]`;
  if (v instanceof Obj) return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}:${jsonText(x, r)}`).join(',')}}`;
  if (v instanceof Raw) return v.text;
  return JSON.stringify(r.resolve(v));
}

// ---------------------------------------------------------------------------------------------
// Hostile atoms

const GiB = 2 ** 30;
const MiB = 2 ** 20;

/** Numbers around the edges of what sizes and counts may be, JSON-writable ones. */
const EDGE_NUMBERS = [
  0, -1, -512, 1, 511, 513, 1023, 1.5, 0.1, 512.000001, 1e-7,
  2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 512,
  2 ** 50 - 512, 2 ** 50, 2 ** 50 + 512, 2 ** 50 + 1,
  2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 60, 2 ** 64, 1e21, 1e308, -1e308,
  Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE,
];

/** Number-ish JSON fragments: what a JS client cannot send but a raw one can. */
const RAW_NUMBERS = [
  '1e400', '-1e400', '1e-400', '-0', '0.0', '-0.0', '1.0', '512.0', '1E3', '5.12e2', '2147483648.0',
  '9007199254740993', '18014398509481985', '123456789012345678901234567890', '1125899906842624.5',
  '0x200', '01', '+1', '.5', '5.', 'NaN', 'Infinity', '-Infinity', '1_000', '١٢٣',
];

/** Strings a number field should never accept. */
const NUMBER_STRINGS = ['1', '512', '2147483648', '0', '-1', 'NaN', 'Infinity', '0x200', '1e3', ' 512', '512 ', '', '1,024', '2 GiB'];

const UUID_LIKE = [
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '{076cc7cd-1239-4e9f-a1d3-06cb50b107a4}',
  '076cc7cd12394e9fa1d306cb50b107a4',
  '076cc7cd-1239-4e9f-a1d3-06cb50b107a4x',
  '076cc7cd-1239-4e9f-a1d3-06cb50b107a',
  '076CC7CD-1239-4E9F-A1D3-06CB50B107A4',
  'g76cc7cd-1239-4e9f-a1d3-06cb50b107a4',
  ' 076cc7cd-1239-4e9f-a1d3-06cb50b107a4',
  '076cc7cd-1239-4e9f-a1d3-06cb50b107a4\n',
];

/** Odd strings: path tricks, injections, control characters, quotes, Unicode edge cases. */
export const HOSTILE_STRINGS = [
  '', ' ', '.', '..', '...', '../', '../../etc/passwd', '..\\..\\windows', '..%2F..%2Fetc%2Fpasswd', '%2e%2e%2f%2e%2e%2f', '/etc/passwd',
  '\u0000', 'a\u0000b', '\r\n', 'a\r\nX-Injected: 1', '\t', '\u000b', '\u001b[31m', '\u007f',
  '"', "'", '`', '\\', '\\"', "' OR '1'='1", '1; DROP TABLE volumes; --', '%', '%00', '%ZZ', '%E0%A4%A', '%u0000', '+', '&', '=', '?', '#', ';',
  '{}', '[]', 'null', 'true', 'undefined', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString',
  '<script>alert(1)</script>', '${jndi:ldap://x/a}', '{{7*7}}', '$(id)', '`id`', '*', '?*',
  '\u202e', '\ufeff', '\u200b', '\ud800', '\udfff', '\ud83d\ude42', 'Ａ', 'é', 'e\u0301', 'İ', 'ß', '\u{10ffff}', 'ﷺ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
  'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(1025), '🙂'.repeat(256), 'é'.repeat(300),
];

const hostileKey = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', '', ' ', 'force', 'admin', 'is_admin', 'project_id', 'id', 'status', 'size', 'bytes', 'x\u0000y', '\ud800', 'a'.repeat(300), 'os-extend', 'os-reset_status', 'os-force_delete', '$where', 'volume.size'),
  fc.string({ maxLength: 12 }),
);

/** Any JSON value at all, small. */
const anyJson: fc.Arbitrary<Val> = fc.letrec<{ v: Val }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.string({ maxLength: 20 }),
    fc.array(tie('v'), { maxLength: 3 }),
    fc.array(fc.tuple(hostileKey, tie('v')), { maxLength: 3 }).map((es) => new Obj(es)),
  ),
})).v;

/** Nesting far deeper than any schema: arrays, objects, both, as raw text (no stack is spent building them). */
const deepNesting: fc.Arbitrary<Val> = fc
  .tuple(fc.constantFrom(64, 1000, 10_000, 30_000), fc.constantFrom('array', 'object', 'mixed'))
  .map(([n, kind]) => {
    if (kind === 'array') return new Raw('['.repeat(n) + ']'.repeat(n));
    if (kind === 'object') {
      const m = Math.min(n, 10_000);
      return new Raw('{"a":'.repeat(m) + '1' + '}'.repeat(m));
    }
    const m = Math.min(n, 8_000);
    return new Raw('[{"a":'.repeat(m) + 'null' + '}]'.repeat(m));
  });

function hostileNumber(s: JsonSchema): fc.Arbitrary<Val> {
  const edges: number[] = [...EDGE_NUMBERS];
  const step = s.multipleOf ?? 1;
  if (s.minimum !== undefined) edges.push(s.minimum, s.minimum - 1, s.minimum - step, s.minimum + step / 2);
  if (s.maximum !== undefined) edges.push(s.maximum, s.maximum + 1, s.maximum + step, s.maximum - step, s.maximum * 2);
  if (s.multipleOf !== undefined) edges.push(s.multipleOf * 3 + 1, s.multipleOf / 2, s.multipleOf * 1.5);
  return fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...edges) },
    { weight: 3, arbitrary: fc.constantFrom(...RAW_NUMBERS).map((t) => new Raw(t)) },
    { weight: 2, arbitrary: fc.constantFrom(...NUMBER_STRINGS) },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.maxSafeInteger() },
    { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
    { weight: 2, arbitrary: fc.constantFrom<Val>(true, false, null, [], [512], new Obj([]), new Obj([['$gt', 0]])) },
  );
}

/** Strings: the odd ones, random ones (any code unit), long ones, and near-misses of the pattern. */
export function hostileString(s: JsonSchema = {}): fc.Arbitrary<string> {
  const arbs: Array<fc.WeightedArbitrary<string>> = [
    { weight: 6, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom(1000, 4096, 20_000, 60_000).map((n) => 'A'.repeat(n)) },
    { weight: 2, arbitrary: fc.constantFrom(...UUID_LIKE) },
    { weight: 1, arbitrary: fc.uuid().map((u) => u.toUpperCase()) },
  ];
  if (s.maxLength !== undefined) arbs.push({ weight: 1, arbitrary: fc.constantFrom('y'.repeat(s.maxLength), 'y'.repeat(s.maxLength + 1), '🙂'.repeat(s.maxLength)) });
  return fc.oneof(...arbs);
}

// ---------------------------------------------------------------------------------------------
// Schema-driven values

/**
 * Valid-looking values for fields whose meaning the schema alone does not give (real ids, sizes
 * the volume can take). Keyed by the field's name; `undefined` falls back to the schema.
 */
export type Hints = (key: string, schema: JsonSchema) => fc.Arbitrary<Val> | undefined;

const UUID_PATTERN = /^\^\[0-9a-fA-F\]\{8\}-/;

/** A value that satisfies `s` (as far as the schema says), using `hints` for known fields. */
export function validFor(s: JsonSchema, hints: Hints, key = ''): fc.Arbitrary<Val> {
  const hinted = hints(key, s);
  if (hinted) return hinted;
  if (s.const !== undefined) return fc.constant(s.const as Val);
  if (s.enum) return fc.constantFrom(...(s.enum as Val[]));
  const union = s.anyOf ?? s.oneOf;
  if (union) return fc.oneof(...union.map((b) => validFor(b, hints, key)));
  const base = validByType(s, hints, key);
  return s.nullable ? fc.oneof({ weight: 4, arbitrary: base }, { weight: 1, arbitrary: fc.constant(null) }) : base;
}

function validByType(s: JsonSchema, hints: Hints, key: string): fc.Arbitrary<Val> {
  switch (s.type) {
    case 'object': {
      const props = Object.entries(s.properties ?? {});
      const required = new Set(s.required ?? []);
      const req = props.filter(([k]) => required.has(k));
      const opt = props.filter(([k]) => !required.has(k));
      return fc
        .tuple(
          fc.tuple(...req.map(([k, p]) => validFor(p, hints, k).map((v) => [k, v] as const))),
          fc.subarray(opt).chain((chosen) => fc.tuple(...chosen.map(([k, p]) => validFor(p, hints, k).map((v) => [k, v] as const)))),
        )
        .map(([a, b]) => new Obj([...a, ...b]));
    }
    case 'array':
      return fc.array(validFor(s.items ?? {}, hints, key), { minLength: s.minItems ?? 0, maxLength: Math.max(3, s.minItems ?? 0) });
    case 'integer':
    case 'number': {
      const step = s.multipleOf ?? 1;
      const lo = Math.ceil((s.minimum ?? 0) / step);
      const hi = Math.floor(Math.min(s.maximum ?? 2 ** 31, (s.minimum ?? 0) + 2 ** 20 * step) / step);
      return fc.integer({ min: lo, max: Math.max(lo, hi) }).map((k) => k * step);
    }
    case 'boolean':
      return fc.boolean();
    case 'string': {
      if (s.pattern && UUID_PATTERN.test(s.pattern)) return fc.uuid();
      if (s.pattern) {
        try {
          return fc.stringMatching(new RegExp(s.pattern)).filter((x) => s.maxLength === undefined || x.length <= s.maxLength);
        } catch {
          // A pattern fast-check cannot generate from (lookarounds): plain strings, then.
        }
      }
      return fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 24, 24) });
    }
    default:
      return anyJson;
  }
}

/** A value that breaks `s` in one way or another (and now and then one that does not). */
export function hostileFor(s: JsonSchema, hints: Hints, key = '', depth = 0): fc.Arbitrary<Val> {
  const valid = validFor(s, hints, key);
  const wrongType = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<Val>(null, true, false, 0, -1, '', 'x', [], new Obj([])) },
    { weight: 2, arbitrary: anyJson },
    { weight: 1, arbitrary: deepNesting },
    { weight: 1, arbitrary: valid.map((v) => [v]) },
  );
  const union = s.anyOf ?? s.oneOf;
  if (union) {
    // A mix of the branches (several actions at once), each branch broken, or something else.
    const mixed = fc
      .tuple(...union.map((b) => validFor(b, hints, key)))
      .map((vs) => new Obj(vs.flatMap((v) => (v instanceof Obj ? v.entries : []))));
    return fc.oneof(
      { weight: 4, arbitrary: fc.oneof(...union.map((b) => hostileFor(b, hints, key, depth))) },
      { weight: 2, arbitrary: mixed },
      { weight: 1, arbitrary: wrongType },
    );
  }
  switch (s.type) {
    case 'object':
      return depth > 3 ? wrongType : fc.oneof({ weight: 8, arbitrary: hostileObject(s, hints, depth) }, { weight: 2, arbitrary: wrongType }, { weight: 1, arbitrary: valid });
    case 'integer':
    case 'number':
      return fc.oneof({ weight: 8, arbitrary: hostileNumber(s) }, { weight: 1, arbitrary: wrongType }, { weight: 2, arbitrary: valid });
    case 'string':
      return fc.oneof({ weight: 8, arbitrary: hostileString(s) }, { weight: 2, arbitrary: hostileNumber({}) }, { weight: 1, arbitrary: wrongType }, { weight: 2, arbitrary: valid });
    case 'boolean':
      return fc.oneof(fc.constantFrom<Val>('true', 0, 1, 'false', null), wrongType);
    default:
      return fc.oneof(wrongType, valid);
  }
}

/** An object that is wrong in one place: a field broken, missing, unknown, duplicated; or empty. */
function hostileObject(s: JsonSchema, hints: Hints, depth: number): fc.Arbitrary<Val> {
  const props = Object.entries(s.properties ?? {});
  const valid = validFor(s, hints).map((v) => (v instanceof Obj ? v : new Obj([])));
  const arbs: Array<fc.WeightedArbitrary<Val>> = [
    // Extra fields: unknown names, prototype keys.
    { weight: 2, arbitrary: fc.tuple(valid, hostileKey, anyJson, fc.boolean()).map(([o, k, v, first]) => new Obj(first ? [[k, v], ...o.entries] : [...o.entries, [k, v]])) },
    // Empty.
    { weight: 1, arbitrary: fc.constant(new Obj([])) },
  ];
  if (props.length) {
    const broken = fc.oneof(...props.map(([k, p]) => hostileFor(p, hints, k, depth + 1).map((v) => [k, v] as const)));
    // One field broken (replacing the valid one, or added when it was optional and absent).
    arbs.push({
      weight: 8,
      arbitrary: fc.tuple(valid, broken).map(([o, [k, v]]) => new Obj([...o.entries.filter(([x]) => x !== k), [k, v]])),
    });
    // A required field missing.
    arbs.push({ weight: 2, arbitrary: fc.tuple(valid, fc.nat()).map(([o, i]) => new Obj(o.entries.filter((_, j) => j !== i % Math.max(1, o.entries.length)))) });
    // The same key twice, the hostile value first or last (JSON.parse keeps the last).
    arbs.push({
      weight: 2,
      arbitrary: fc.tuple(valid, broken, fc.boolean()).map(([o, [k, v], last]) => {
        const same = o.entries.find(([x]) => x === k);
        const pair = [k, v] as const;
        return new Obj(same ? (last ? [...o.entries, pair] : [pair, ...o.entries]) : [...o.entries, pair, pair]);
      }),
    });
  }
  return fc.oneof(...arbs);
}

// ---------------------------------------------------------------------------------------------
// Whole requests

export type TokenKind = 'admin' | 'member' | 'otherAdmin' | 'expired' | 'garbage' | 'none';

/** How a path parameter is written into the URL. */
export type Encoding = 'component' | 'asis' | 'double' | 'slashes';

export type PathValue = { ref: Ref } | { text: string; encoding: Encoding };

export type Body =
  | { kind: 'none' }
  | { kind: 'json'; value: Val }
  /** Text that is not JSON, or JSON in a form a tree cannot hold. */
  | { kind: 'text'; text: string }
  /** Bytes, not text: random bytes, or JSON in another encoding. */
  | { kind: 'bytes'; bytes: Uint8Array }
  /** Valid-looking JSON padded past the body limit. */
  | { kind: 'oversized'; value: Val; bytes: number };

export type UrlMutation =
  | 'trailingSlash'
  | 'doubleSlash'
  | 'unknownSubPath'
  | 'dotSegment'
  | 'dotDotSegment'
  | 'encodedSlash'
  | 'upperCase'
  | 'versionPrefix'
  | 'dropLastSegment'
  | 'matrixParam'
  | 'fragment'
  | 'extension'
  | 'emptyQuery';

/** Request framing only a raw socket can send. */
export type RawTrick = 'none' | 'shortContentLength' | 'absoluteUri' | 'duplicateContentType' | 'lfOnly' | 'rawPath';

export interface FuzzCase {
  route: Route;
  method: string;
  params: Record<string, PathValue>;
  query: Array<[string, string]>;
  token: TokenKind;
  headers: Array<[string, string]>;
  /** `null`: no Content-Type header at all. */
  contentType: string | null;
  body: Body;
  url: UrlMutation | null;
  raw: RawTrick;
  /** Which seeded thing references with `i = -1` name (so a server and its volume agree). */
  pick: number;
}

const OTHER_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];

const tokenArb: fc.Arbitrary<TokenKind> = fc.oneof(
  { weight: 16, arbitrary: fc.constant('admin' as const) },
  { weight: 1, arbitrary: fc.constantFrom<TokenKind>('member', 'otherAdmin', 'expired', 'garbage', 'none') },
);

const CONTENT_TYPES = [
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'APPLICATION/JSON',
  'application/json;',
  'application/json; boundary=x; charset=utf-8; charset=ascii',
  'application/jsonx',
  'application/vnd.api+json',
  'application/merge-patch+json',
  'text/json',
  'text/plain',
  'text/html',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/xml',
  'application/octet-stream',
  '',
  '*/*',
  'application/json, text/plain',
  'application/json\u00e9',
];

const contentTypeArb: fc.Arbitrary<string | null> = fc.oneof(
  { weight: 14, arbitrary: fc.constant('application/json') },
  { weight: 2, arbitrary: fc.constantFrom(...CONTENT_TYPES) },
  { weight: 1, arbitrary: fc.constant(null) },
);

const EXTRA_HEADERS: Array<[string, string]> = [
  ['accept', 'text/html'],
  ['accept', 'application/xml;q=1, */*;q=0'],
  ['accept-encoding', 'gzip, br'],
  ['content-encoding', 'gzip'],
  ['content-encoding', 'identity, chunked'],
  ['x-openstack-request-id', 'req-00000000-0000-4000-8000-000000000000'],
  ['x-openstack-request-id', '../../etc/passwd'],
  ['openstack-api-version', 'volume 3.999'],
  ['openstack-api-version', 'compute latest'],
  ['x-openstack-nova-api-version', '2.999'],
  ['x-forwarded-for', '127.0.0.1, 10.0.0.1'],
  ['x-forwarded-host', 'evil.example'],
  ['x-http-method-override', 'DELETE'],
  ['x-auth-project-id', 'p-other'],
  ['x-roles', 'admin'],
  ['x-project-id', 'p-other'],
  ['expect', '100-continue'],
  ['transfer-encoding', 'chunked'],
  ['connection', 'close'],
  ['connection', 'upgrade'],
  ['upgrade', 'websocket'],
  ['range', 'bytes=0-10'],
  ['if-match', '*'],
  ['cookie', 'session=x'],
  ['authorization', 'Bearer oe-xyz'],
  // A second token header: Node joins the two ("a, b").
  ['x-auth-token', 'oe-second-token'],
  ['x-pad', 'p'.repeat(8000)],
  ['x-unicode', 'caf\u00e9'],
];

const headersArb: fc.Arbitrary<Array<[string, string]>> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Array<[string, string]>>([]) },
  { weight: 1, arbitrary: fc.subarray(EXTRA_HEADERS, { minLength: 1, maxLength: 3 }) },
);

const queryArb = (route: Route, hints: Hints): fc.Arbitrary<Array<[string, string]>> => {
  const declared = route.params.filter((p) => p.in === 'query');
  const asText = (v: Val): string => (typeof v === 'string' ? v : v instanceof Raw ? v.text : jsonText(v, { resolve: (r) => r.kind }));
  const pair: fc.Arbitrary<[string, string]> = fc.oneof(
    fc.tuple(fc.constantFrom('limit', 'marker', 'offset', 'sort', 'sort_key', 'all_tenants', 'project_id', 'detail', 'status', 'with_count', '__proto__[x]', 'a[]', 'a[b][c]', 'limit[$gt]', ''), hostileString()),
    fc.tuple(fc.constantFrom('limit', 'offset'), fc.constantFrom('-1', '0', '1', '1000000', '2147483648', '1e9', 'NaN', '1.5', '')),
    fc.tuple(hostileString(), hostileString()),
    ...declared.map((p) => fc.tuple(fc.constant(p.name), fc.oneof(hostileFor(p.schema, hints, p.name), validFor(p.schema, hints, p.name)).map(asText))),
  );
  return fc.oneof(
    { weight: 16, arbitrary: fc.constant<Array<[string, string]>>([]) },
    { weight: 4, arbitrary: fc.array(pair, { minLength: 1, maxLength: 4 }) },
    // Long enough to pass the URL limit now and then.
    { weight: 1, arbitrary: fc.constantFrom(500, 1900, 2100, 8000).map((n) => [['q', 'q'.repeat(n)] as [string, string]]) },
  );
};

function pathValueArb(p: RouteParam, valid: fc.Arbitrary<PathValue>): fc.Arbitrary<PathValue> {
  const hostileText = fc.oneof(
    { weight: 6, arbitrary: hostileString(p.schema) },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: hostileNumber({}).map((v) => (typeof v === 'string' ? v : jsonText(v, { resolve: (r) => r.kind }))) },
  );
  const encoding = fc.oneof(
    { weight: 8, arbitrary: fc.constant<Encoding>('component') },
    { weight: 2, arbitrary: fc.constantFrom<Encoding>('asis', 'double', 'slashes') },
  );
  return fc.oneof(
    { weight: 9, arbitrary: valid },
    { weight: 2, arbitrary: fc.record({ text: hostileText, encoding }) },
  );
}

/** Valid-looking values of path parameters, by name. */
export type PathHints = (route: Route, param: RouteParam) => fc.Arbitrary<PathValue> | undefined;

/** Every hostile request this route can be sent, derived from its schemas. */
export function caseArb(route: Route, hints: { body: Hints; path: PathHints }): fc.Arbitrary<FuzzCase> {
  const pathParams = route.params.filter((p) => p.in === 'path');
  const params = fc.record(
    Object.fromEntries(
      pathParams.map((p) => {
        const valid = hints.path(route, p) ?? validFor(p.schema, hints.body, p.name).map((v) => ({ text: typeof v === 'string' ? v : JSON.stringify(v), encoding: 'component' as const }));
        return [p.name, pathValueArb(p, valid as fc.Arbitrary<PathValue>)];
      }),
    ),
  ) as fc.Arbitrary<Record<string, PathValue>>;

  const noBody = fc.constant<Body>({ kind: 'none' });
  const strayBody: fc.Arbitrary<Body> = fc.oneof(
    fc.constantFrom<Body>({ kind: 'json', value: new Obj([]) }, { kind: 'text', text: 'null' }, { kind: 'text', text: '{' }),
    anyJson.map((value): Body => ({ kind: 'json', value })),
    fc.constant<Body>({ kind: 'oversized', value: new Obj([]), bytes: 100_000 }),
  );
  const textBodies = fc.constantFrom(
    '', ' ', 'null', 'true', '0', '"x"', '[]', '{', '}', '{"a":1,}', '{a:1}', "{'a':1}", 'NaN', '\ufeff{}', '{}{}', '{} x', '{}\u0000',
    'undefined', '{"a":1 /* c */}', '{"a":"\\x41"}', '{"a":"\\ud800"}', '{"a":"\\u0000"}', '{"__proto__":{"polluted":1}}',
    '{"constructor":{"prototype":{"polluted":1}}}', 'a=1&b=2', '<xml/>', '\u0000\u0000\u0000',
  );
  let body: fc.Arbitrary<Body>;
  if (route.body) {
    const schema = route.body;
    body = fc.oneof(
      { weight: 10, arbitrary: validFor(schema, hints.body).map((value): Body => ({ kind: 'json', value })) },
      { weight: 12, arbitrary: hostileFor(schema, hints.body).map((value): Body => ({ kind: 'json', value })) },
      { weight: 1, arbitrary: textBodies.map((text): Body => ({ kind: 'text', text })) },
      {
        weight: 1,
        arbitrary: fc.oneof(
          fc.uint8Array({ minLength: 1, maxLength: 64 }),
          validFor(schema, hints.body).map((v) => new Uint8Array(Buffer.from(jsonText(v, { resolve: () => 1 }), 'utf16le'))),
        ).map((bytes): Body => ({ kind: 'bytes', bytes })),
      },
      { weight: 1, arbitrary: fc.tuple(validFor(schema, hints.body), fc.constantFrom(65_537, 70_000, 200_000)).map(([value, bytes]): Body => ({ kind: 'oversized', value, bytes })) },
      { weight: 1, arbitrary: noBody },
    );
  } else {
    body = fc.oneof({ weight: 9, arbitrary: noBody }, { weight: 1, arbitrary: strayBody });
  }

  const method = fc.oneof({ weight: 30, arbitrary: fc.constant(route.method) }, { weight: 1, arbitrary: fc.constantFrom(...OTHER_METHODS.filter((m) => m !== route.method)) });
  const url = fc.oneof(
    { weight: 25, arbitrary: fc.constant(null) },
    {
      weight: 2,
      arbitrary: fc.constantFrom<UrlMutation>(
        'trailingSlash', 'doubleSlash', 'unknownSubPath', 'dotSegment', 'dotDotSegment', 'encodedSlash', 'upperCase', 'versionPrefix', 'dropLastSegment', 'matrixParam', 'fragment', 'extension', 'emptyQuery',
      ),
    },
  );
  const raw = fc.oneof(
    { weight: 40, arbitrary: fc.constant<RawTrick>('none') },
    { weight: 1, arbitrary: fc.constantFrom<RawTrick>('shortContentLength', 'absoluteUri', 'duplicateContentType', 'lfOnly', 'rawPath') },
  );

  return fc.record({
    route: fc.constant(route),
    method,
    params,
    query: queryArb(route, hints.body),
    token: tokenArb,
    headers: headersArb,
    contentType: contentTypeArb,
    body,
    url,
    raw,
    pick: fc.nat({ max: 999 }),
  });
}

// ---------------------------------------------------------------------------------------------
// From a case to bytes on the wire

export interface WireRequest {
  method: string;
  /** The request target as sent (may hold bytes no HTTP client would send). */
  path: string;
  headers: Array<[string, string]>;
  body: Buffer | undefined;
  raw: RawTrick;
}

/** encodeURIComponent for any string: a lone surrogate is sent as UTF-8's replacement character. */
export function pctEncode(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    out += /[A-Za-z0-9\-_.!~*'()]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function encodeParam(text: string, encoding: Encoding): string {
  switch (encoding) {
    case 'component':
      return pctEncode(text);
    case 'asis':
      return text;
    case 'double':
      return pctEncode(pctEncode(text));
    case 'slashes':
      return text.replace(/\//g, '%2F').replace(/ /g, '%20');
  }
}

function mutateUrl(path: string, m: UrlMutation | null): string {
  switch (m) {
    case null:
      return path;
    case 'trailingSlash':
      return `${path}/`;
    case 'doubleSlash': {
      const cut = path.indexOf('/', 1);
      return cut < 0 ? `/${path}` : `${path.slice(0, cut)}/${path.slice(cut)}`;
    }
    case 'unknownSubPath':
      return `${path}/os-unknown`;
    case 'dotSegment':
      return path.replace(/\/([^/]*)$/, '/./$1');
    case 'dotDotSegment':
      return `${path}/../..`;
    case 'encodedSlash':
      return path.replace(/\/([^/]*)$/, '%2F$1');
    case 'upperCase':
      return path.toUpperCase();
    case 'versionPrefix':
      return path.replace(/^\/v(\d)/, '/v$1.1');
    case 'dropLastSegment':
      return path.replace(/\/[^/]*$/, '') || '/';
    case 'matrixParam':
      return `${path};jsessionid=1`;
    case 'fragment':
      return `${path}#frag`;
    case 'extension':
      return `${path}.json`;
    case 'emptyQuery':
      return `${path}?`;
  }
}

function bodyBytes(body: Body, r: Resolver): Buffer | undefined {
  switch (body.kind) {
    case 'none':
      return undefined;
    case 'json':
      return Buffer.from(jsonText(body.value, r), 'utf8');
    case 'text':
      return Buffer.from(body.text, 'utf8');
    case 'bytes':
      return Buffer.from(body.bytes);
    case 'oversized': {
      const base = body.value instanceof Obj ? body.value : new Obj([['value', body.value]]);
      const text = jsonText(new Obj([...base.entries, ['pad', 'x'.repeat(body.bytes)]]), r);
      return Buffer.from(text, 'utf8');
    }
  }
}

/**
 * The request to send for `c`, references resolved with `r` (path parameters first, in the
 * template's order, so the resolver knows which volume a relative size is about).
 */
export function materialize(c: FuzzCase, r: Resolver, tokens: Record<TokenKind, string | undefined>): WireRequest {
  let path = c.route.path.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const v = c.params[name];
    if (!v) return '';
    return 'ref' in v ? pctEncode(String(r.resolve(v.ref))) : encodeParam(v.text, v.encoding);
  });
  path = mutateUrl(path, c.url);
  if (c.query.length) path += `?${c.query.map(([k, v]) => `${pctEncode(k)}=${pctEncode(v)}`).join('&')}`;
  const headers: Array<[string, string]> = [];
  const token = tokens[c.token];
  if (token !== undefined) headers.push(['x-auth-token', token]);
  const body = bodyBytes(c.body, r);
  if (c.contentType !== null && (body !== undefined || c.route.body)) headers.push(['content-type', c.contentType]);
  headers.push(...c.headers);
  return { method: c.method, path, headers, body, raw: c.raw };
}

/** A short, printable account of a request, for failure messages. */
export function describeWire(w: WireRequest): string {
  const body = w.body === undefined ? '' : ` body(${w.body.length} B)=${JSON.stringify(w.body.subarray(0, 300).toString('utf8'))}`;
  const headers = w.headers.map(([k, v]) => `${k}: ${k === 'x-auth-token' ? `${v.slice(0, 8)}…` : v.length > 60 ? `${v.slice(0, 60)}…` : v}`).join('; ');
  const path = w.path.length > 300 ? `${w.path.slice(0, 300)}…(${w.path.length})` : w.path;
  return `${w.method} ${JSON.stringify(path)}${w.raw === 'none' ? '' : ` [raw: ${w.raw}]`} {${headers}}${body}`;
}

export { GiB, MiB };
