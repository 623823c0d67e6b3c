/**
 * The limits of one HTTP server: timeouts, the connection cap, and what one connection may make
 * the process hold (pipelined requests, unsent response bytes). Sizes in bytes, times in ms.
 */

/** Limits of one HTTP server (all times in milliseconds). */
export interface HttpLimits {
  /**
   * The request line and headers must have arrived this long after the request began, and a new
   * connection may stay silent no longer than this: slowloris and idle connects end here (408).
   */
  headersTimeoutMs: number;
  /** The whole request, body included, must have arrived this long after it began (408). */
  requestTimeoutMs: number;
  /** A keep-alive connection idle this long after a response is closed. */
  keepAliveTimeoutMs: number;
  /**
   * Open connections at most. A connection over the cap closes the least recently active one that
   * has no complete request being served; if every connection is serving one, the new one is dropped.
   */
  maxConnections: number;
  /** On close: how long requests already being served may take before their connections are cut. */
  shutdownGraceMs: number;
  /**
   * A client must take the answers written to it: a connection whose response bytes have waited
   * in this process this long with no write completing is cut, and what it held is freed.
   */
  sendTimeoutMs: number;
  /**
   * Requests of one connection being answered at once (HTTP/1.1 pipelining depth). The next one
   * is refused with a 503 and the connection closes after the answers before it.
   */
  maxPipelined: number;
  /** Response bytes one connection may leave waiting in this process; a connection over it is cut. */
  maxUnsentBytes: number;
  /**
   * Answers made in one event-loop turn are handed to the kernel together at its end
   * (batchedWrites.ts: a quarter less CPU per answer under load on a VM). Absent or true: on.
   * Not a configuration key; false is for benchmarks and tests comparing the two.
   */
  batchWrites?: boolean;
}

/**
 * The limits a server gets where its caller names none (tests, tools). `serve` passes the
 * configuration's (config.ts, keys http*, shutdownGraceMs), whose defaults are these: a unit test
 * holds the two equal. The connection cap's default depends on the open-files limit
 * (util/fdLimit.ts) and is computed when a server is made.
 */
export const DEFAULT_HTTP_LIMITS: Readonly<Omit<HttpLimits, 'maxConnections'>> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  shutdownGraceMs: 10_000,
  sendTimeoutMs: 10_000,
  maxPipelined: 16,
  maxUnsentBytes: 4 * 1024 * 1024,
};

/** Requests answered at once per connection: browsers and HTTP libraries pipeline none or a few. */
export const MAX_PIPELINED = DEFAULT_HTTP_LIMITS.maxPipelined;
/** Unsent response bytes per connection: several of our largest answers (a 1,000-item page). */
export const MAX_UNSENT_BYTES = DEFAULT_HTTP_LIMITS.maxUnsentBytes;

/** Node's default header limit, stated: the request line counts too. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Our URLs are under 200 characters; anything far longer is refused before routing work. */
export const MAX_URL_LENGTH = 2048;

/**
 * How often Node's HTTP server checks its header and request deadlines (its
 * `connectionsCheckingInterval`, 30 s by default): a quarter of the header deadline, 50 ms to 1 s,
 * so a deadline fires at most 25% late.
 */
export function deadlineCheckIntervalMs(headersTimeoutMs: number): number {
  return Math.min(1000, Math.max(50, Math.floor(headersTimeoutMs / 4)));
}

