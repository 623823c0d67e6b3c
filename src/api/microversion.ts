/**
 * Microversions, as Nova and Cinder negotiate them (nova/api/openstack/wsgi.py
 * `set_api_version_request` through microversion_parse, cinder/api/openstack/wsgi.py): one
 * module for both APIs, told which service it speaks for.
 *
 * - `OpenStack-API-Version: compute 2.1` / `volume 3.0`. One value may name several services,
 *   comma-separated (repeated headers arrive joined the same way); the service name is matched
 *   case-insensitively and the last entry for it wins, as microversion_parse reads it.
 * - Compute also reads the legacy `X-OpenStack-Nova-API-Version: 2.1` when the standard header
 *   has no compute entry (novaclient sends only the legacy one below 2.27; Cinder calls Nova that way).
 * - No version → the minimum. `latest` → the maximum.
 * - A version that is not `MajorNum.MinorNum` → 400; one outside [min, max] → 406 (a
 *   `computeFault`: 406 is not in either service's fault map). On the volume API a standard
 *   header without a `volume` entry is refused too (Cinder raises VersionNotFoundForAPIMethod
 *   there, an Invalid: 400); Nova falls back to the legacy header or the minimum.
 * - Every answer of the API carries the version chosen, errors included, plus `Vary`. When
 *   negotiation itself fails (the 400 and the 406 above) no version was chosen and none is echoed.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errors } from '../errors.js';

/** The OpenStack service type an API speaks for, as it appears in `OpenStack-API-Version`. */
export type ApiService = 'compute' | 'volume';

/** The standard header (RFC 7230 names are case-insensitive; Node gives them lower-cased). */
export const API_VERSION_HEADER = 'OpenStack-API-Version';
/** Nova's legacy header, read and echoed by the compute API only. */
export const LEGACY_COMPUTE_VERSION_HEADER = 'X-OpenStack-Nova-API-Version';
/** API_VERSION_HEADER as Node keys it in `req.headers`: made once (a lowered name made per request is a new string to look up). */
const API_VERSION_HEADER_KEY = API_VERSION_HEADER.toLowerCase();

/** Nova's and Cinder's version grammar (api_version_request.py): no leading zeros, minor may be 0. */
const VERSION = /^([1-9]\d*)\.([1-9]\d*|0)$/;

/** A microversion `major.minor`, compared numerically (2.10 is above 2.9). Immutable. */
export class ApiVersion {
  constructor(
    readonly major: number,
    readonly minor: number,
  ) {}

  /** `X.Y` parsed with Nova's grammar; undefined for anything else (`2`, `2.01`, ` 2.1`, `v2.1`). */
  static parse(text: string): ApiVersion | undefined {
    const m = VERSION.exec(text);
    return m ? new ApiVersion(Number(m[1]), Number(m[2])) : undefined;
  }

  /** Negative, zero or positive as this version is below, equal to or above `other`. */
  compare(other: ApiVersion): number {
    return this.major - other.major || this.minor - other.minor;
  }

  /** Whether this version is `other` or later: how a handler gates a shape change (`req.apiVersion.atLeast(COMPUTE_2_51)`). */
  atLeast(other: ApiVersion): boolean {
    return this.compare(other) >= 0;
  }

  /** `X.Y`, as the headers and messages write it. */
  toString(): string {
    return `${this.major}.${this.minor}`;
  }
}

/** What one API advertises: its service type, the lowest and highest microversion it serves, and the legacy header it also reads. */
export interface MicroversionRange {
  service: ApiService;
  min: ApiVersion;
  max: ApiVersion;
  /** Lower-case name of a legacy request header read when the standard one names no version for this service. */
  legacyHeader?: string;
}

/**
 * The compute API's range: 2.1–2.51. The max is a promise that every shape change up to it is
 * implemented (novaclient, openstacksdk and OSC negotiate up to it): the server views carry the
 * deltas of 2.3, 2.9, 2.16, 2.19, 2.26 and 2.47 and instance action events those of 2.51
 * (routes/compute/views.ts; docs/notes/f-openstack-on-the-wire.md §1.2–§1.4). 2.51 is what
 * Cinder's volume-extended event needs; the next deltas (2.58, 2.62, 2.63, …) come with a higher max.
 */
export const COMPUTE_VERSIONS: MicroversionRange = {
  service: 'compute',
  min: new ApiVersion(2, 1),
  max: new ApiVersion(2, 51),
  legacyHeader: LEGACY_COMPUTE_VERSION_HEADER.toLowerCase(),
};

/**
 * The volume API's range: up to 3.42, extending an in-use volume (what tempest's attached-extend
 * test and `openstack volume set --size` on an attached volume need), with every view change up
 * to it (3.13 `group_id`, 3.21 `provider_id` for admins, 3.33 refusing unknown list filters: see
 * routes/volume/volumes.ts). Not higher: ≥3.27 would announce Cinder's own attachments API,
 * which our `/v3/{p}/attachments` is not, and 3.48 adds `shared_targets`/`service_uuid`.
 */
export const VOLUME_VERSIONS: MicroversionRange = {
  service: 'volume',
  min: new ApiVersion(3, 0),
  max: new ApiVersion(3, 42),
};

/** The range the API of `service` advertises. */
export function versionsFor(service: ApiService): MicroversionRange {
  return service === 'compute' ? COMPUTE_VERSIONS : VOLUME_VERSIONS;
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}

/** The standard header's entry for `service`: the last `service X.Y` item, undefined when none names it. */
function standardEntry(value: string, service: ApiService): string | undefined {
  let found: string | undefined;
  for (const item of value.split(',')) {
    const m = /^(\S+)\s+(.*)$/.exec(item.trim());
    if (m && m[1]!.toLowerCase() === service) found = m[2]!.trim();
  }
  return found;
}

/**
 * The microversion a request asks `range`'s API for, negotiated. Returns the version to serve:
 * the minimum when none is asked, the maximum for `latest`.
 * Throws BadRequest (400) for a malformed version, or on the volume API for a standard header
 * without a `volume` entry; VersionNotAcceptable (406) for a version outside [min, max].
 */
export function negotiateVersion(headers: IncomingHttpHeaders, range: MicroversionRange): ApiVersion {
  let asked: string | undefined;
  const standard = headerText(headers[API_VERSION_HEADER_KEY]);
  if (standard !== undefined) {
    asked = standardEntry(standard, range.service);
    if (asked === undefined && range.service === 'volume') {
      throw errors.badRequest(`The ${API_VERSION_HEADER} header names no version for the volume API; send 'volume X.Y' (${range.min}–${range.max}) or no header.`);
    }
  }
  if (asked === undefined && range.legacyHeader !== undefined) {
    const legacy = headerText(headers[range.legacyHeader]);
    if (legacy !== undefined) asked = legacy.split(',').at(-1)!.trim();
  }
  if (asked === undefined) return range.min;
  if (asked === 'latest') return range.max;
  const version = ApiVersion.parse(asked);
  if (!version) throw errors.invalidApiVersion(asked);
  if (version.compare(range.min) < 0 || version.compare(range.max) > 0) throw errors.versionNotAcceptable(asked, String(range.min), String(range.max)); // as sent: a huge minor is past exact numbers
  return version;
}

/** The headers that echo `version` on an answer of `range`'s API (Nova's `compute X.Y` and legacy `X.Y`; Cinder's `volume X.Y`). */
export function versionHeaders(range: MicroversionRange, version: ApiVersion): Record<string, string> {
  const out: Record<string, string> = { [API_VERSION_HEADER]: `${range.service} ${version}` };
  if (range.legacyHeader !== undefined) out[LEGACY_COMPUTE_VERSION_HEADER] = String(version);
  return out;
}

/** The names `Vary` gets on an answer of `range`'s API: the answer depends on the version headers. */
export function varyNames(range: MicroversionRange): string[] {
  return range.legacyHeader !== undefined ? [API_VERSION_HEADER, LEGACY_COMPUTE_VERSION_HEADER] : [API_VERSION_HEADER];
}

/**
 * Echoes the version `req` was served at on `reply`: the version headers, and the names added
 * to `Vary` (kept with any already there, each once). A request whose negotiation did not run
 * (refused before it: 503 draining, 414, a router error) is negotiated here; if that fails
 * too, or failed before (the 400 and the 406), nothing is echoed.
 */
export function echoVersion(req: FastifyRequest, reply: FastifyReply, range: MicroversionRange): void {
  let version = req.apiVersion as ApiVersion | null | undefined;
  if (version == null && req.apiVersionError == null) {
    try {
      version = negotiateVersion(req.headers, range);
    } catch {
      return;
    }
  }
  if (version == null) return;
  const echo = echoOf(range, version);
  for (const [name, value] of echo.headers) reply.header(name, value);
  const current = reply.getHeader('vary');
  if (current === undefined) {
    // The common case, on every answer: no Vary yet.
    reply.header('vary', echo.vary);
    return;
  }
  const names = (Array.isArray(current) ? current.join(',') : String(current))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const n of varyNames(range)) if (!names.some((s) => s.toLowerCase() === n.toLowerCase())) names.push(n);
  reply.header('vary', names.join(', '));
}

/** The echo of each (range, version), built once: this runs on every answer. */
const ECHOES = new WeakMap<MicroversionRange, Map<string, { headers: Array<[string, string]>; vary: string }>>();

/** The echoes of each range's own min and max objects (what most requests are served at): no key made for them. */
const RANGE_ECHOES = new WeakMap<MicroversionRange, { min: Echo; max: Echo }>();

type Echo = { headers: Array<[string, string]>; vary: string };

function echoOf(range: MicroversionRange, version: ApiVersion): Echo {
  if (version === range.min || version === range.max) {
    let ends = RANGE_ECHOES.get(range);
    if (ends === undefined) RANGE_ECHOES.set(range, (ends = { min: echoByText(range, range.min), max: echoByText(range, range.max) }));
    return version === range.min ? ends.min : ends.max;
  }
  return echoByText(range, version);
}

function echoByText(range: MicroversionRange, version: ApiVersion): Echo {
  let byVersion = ECHOES.get(range);
  if (!byVersion) ECHOES.set(range, (byVersion = new Map()));
  const key = String(version);
  let echo = byVersion.get(key);
  if (!echo) {
    echo = { headers: Object.entries(versionHeaders(range, version)), vary: varyNames(range).join(', ') };
    byVersion.set(key, echo);
  }
  return echo;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Why negotiation refused the request (400/406), answered after the token and project checks; null otherwise. */
    apiVersionError: Error | null;
    /**
     * The microversion this request is served at (see `negotiateVersion`). Set by createServer's
     * onRequest hook before any route handler runs: handlers read it without a check. Hooks that
     * run before negotiation (or after it failed) see null.
     */
    apiVersion: ApiVersion;
  }
}
