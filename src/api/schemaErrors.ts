/**
 * Validation messages that name the field and say what is wrong with it, in Nova's words
 * ("Invalid input for field/attribute body.volume.size: must be >= 1").
 *
 * Unions (`anyOf`, TypeBox `Type.Union`) need care: Ajv reports the first error of every branch
 * and then "must match a schema in anyOf", so the first error is usually from a branch the
 * client never meant (`'os-extend' is a required property` for an `os-extend-bytes` body). We
 * report the branch the client chose instead:
 * - a union of objects told apart by their required keys (Cinder-style actions such as
 *   `{"os-extend": …}` | `{"os-extend-bytes": …}`): the branch whose keys the body has; with
 *   none or several, a message naming the keys allowed;
 * - a union of constants: "must be one of …";
 * - any other union: the branch whose error lies deepest in the data (the client got further
 *   into it), else every branch's reason joined with "or".
 * Needs Ajv's `verbose` option (errors carry `schema` and `data`); without it, it falls back to
 * the deepest-error rule.
 */

/** The parts of an Ajv error we read (Ajv's `ErrorObject`, with `verbose: true`). */
export interface AjvError {
  keyword: string;
  instancePath: string;
  schemaPath: string;
  message?: string;
  params: Record<string, unknown>;
  schema?: unknown;
  data?: unknown;
}

type JsonSchema = Record<string, unknown>;

/** At most this many of the client's keys are quoted back in a message. */
const MAX_KEYS_QUOTED = 5;

/** Fastify's `schemaErrorFormatter`: one message for the error the client most needs to fix. */
export function formatSchemaErrors(errs: AjvError[], dataVar: string): Error {
  if (errs.length === 0) return new Error(`Invalid input for field/attribute ${dataVar}`);
  const { at, what } = explain(errs, dataVar === 'querystring');
  const field = `${dataVar}${at}`.replace(/\//g, '.');
  return new Error(`Invalid input for field/attribute ${field}: ${what}`);
}

/** `inQuery`: the data is a query string (where a parameter given twice arrives as an array). */
function explain(errs: AjvError[], inQuery: boolean): { at: string; what: string } {
  const union = outermostUnion(errs);
  if (!union) return describe(errs[0]!, inQuery);
  const schemas = Array.isArray(union.schema) ? (union.schema as JsonSchema[]) : undefined;
  const branches = branchErrors(errs, union, schemas?.length ?? 0);

  const tags = schemas?.map(requiredKeys);
  if (schemas && tags?.every((t) => t.length > 0)) {
    const data = union.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return sameOrJoined(union, branches, inQuery);
    const present = new Set(Object.keys(data));
    const chosen = tags.flatMap((t, i) => (t.every((k) => present.has(k)) ? [i] : []));
    if (chosen.length === 1 && branches[chosen[0]!]!.length) return explain(branches[chosen[0]!]!, inQuery);
    const allowed = tags.map((t) => t.map(quote).join(' with ')).join(', ');
    const got = [...present].slice(0, MAX_KEYS_QUOTED).map(quote).join(', ') || 'none';
    return { at: union.instancePath, what: `must contain exactly one of ${allowed} (got ${got})` };
  }
  if (schemas?.every((s) => s && typeof s === 'object' && 'const' in s)) {
    return { at: union.instancePath, what: `must be one of ${schemas.map((s) => JSON.stringify(s.const)).join(', ')}` };
  }

  // Untagged: the branch the client got furthest into, if exactly one did.
  const depth = (es: AjvError[]) => (es.length ? Math.max(...es.map((e) => segments(e.instancePath))) : -1);
  const depths = branches.map(depth);
  const deepest = Math.max(...depths);
  if (deepest > segments(union.instancePath) && depths.filter((d) => d === deepest).length === 1) {
    return explain(branches[depths.indexOf(deepest)]!, inQuery);
  }
  return sameOrJoined(union, branches, inQuery);
}

/** Every branch failed at the union itself: one reason if they agree, else each joined by "or". */
function sameOrJoined(union: AjvError, branches: AjvError[][], inQuery: boolean): { at: string; what: string } {
  const reasons = [...new Set(branches.filter((b) => b.length).map((b) => explain(b, inQuery).what))];
  return { at: union.instancePath, what: reasons.length ? reasons.join(' or ') : (union.message ?? 'is invalid') };
}

function describe(e: AjvError, inQuery: boolean): { at: string; what: string } {
  let what = e.message ?? 'is invalid';
  if (e.keyword === 'additionalProperties') {
    what = `Additional properties are not allowed ('${String(e.params.additionalProperty)}' was unexpected)`;
  } else if (e.keyword === 'required') {
    what = `'${String(e.params.missingProperty)}' is a required property`;
  } else if (e.keyword === 'multipleOf') {
    what = `must be a multiple of ${String(e.params.multipleOf)}`;
  } else if (inQuery && e.keyword === 'type' && Array.isArray(e.data) && e.data.length > 1 && e.params.type !== 'array' && e.data.every((x) => typeof x === 'string')) {
    // A query parameter given twice (`?limit=1&limit=2`) arrives as an array of strings; a
    // body's array (`[]`, `["a"]`) is the client's own value, and gets the type's message.
    what = 'is given more than once; give it once';
  } else if (e.keyword === 'type' && e.params.type === 'boolean' && 'data' in e) {
    // Ajv's "must be boolean" leaves a client sending "true" or 1 to guess what would do.
    what = `must be a JSON boolean (true or false), got ${jsonKind(e.data)}`;
  }
  return { at: e.instancePath, what };
}

/** What a JSON value is, in words, for messages: `a string ("true")`, `a number (1)`, `null`, `an array`, `an object`. */
function jsonKind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `a string (${JSON.stringify(v.length > 16 ? `${v.slice(0, 16)}…` : v)})`;
  if (typeof v === 'number') return `a number (${v})`;
  if (typeof v === 'object') return 'an object';
  return typeof v;
}

/** The anyOf error whose branches contain the first error, outermost first. */
function outermostUnion(errs: AjvError[]): AjvError | undefined {
  const first = errs[0]!.schemaPath;
  let best: AjvError | undefined;
  for (const e of errs) {
    if (e.keyword !== 'anyOf' || !first.startsWith(`${e.schemaPath}/`)) continue;
    if (!best || e.schemaPath.length < best.schemaPath.length) best = e;
  }
  return best;
}

/** The errors of each branch of `union`, by branch index (an empty list for a branch without any). */
function branchErrors(errs: AjvError[], union: AjvError, count: number): AjvError[][] {
  const prefix = `${union.schemaPath}/`;
  const out: AjvError[][] = Array.from({ length: count }, () => []);
  for (const e of errs) {
    if (!e.schemaPath.startsWith(prefix)) continue;
    const i = Number(e.schemaPath.slice(prefix.length).split('/')[0]);
    if (!Number.isInteger(i) || i < 0) continue;
    while (out.length <= i) out.push([]);
    out[i]!.push(e);
  }
  return out;
}

function requiredKeys(s: JsonSchema | undefined): string[] {
  return s && s.type === 'object' && Array.isArray(s.required) ? (s.required as string[]) : [];
}

function segments(instancePath: string): number {
  return instancePath === '' ? 0 : instancePath.split('/').length - 1;
}

function quote(key: string): string {
  return `'${key.length > 64 ? `${key.slice(0, 64)}…` : key}'`;
}
