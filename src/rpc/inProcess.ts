/**
 * An ApiDispatch (httpClient.ts) for an API served by this same process: each call goes through
 * the app's whole request pipeline (its hooks, auth, policy, routes, error handler and audit) by
 * Fastify's `inject`, without a socket, an HTTP parser or fetch. `serve` uses it for the volume
 * service's calls to its own compute API: on this machine a call over loopback HTTP cost the
 * extend 1–1.8 ms beyond compute's own work (fetch, two parsers, two event-loop wake-ups) and an
 * in-process one 0.1–0.5 ms (README, benchmark C).
 *
 * What the app sees differs from a call over a socket only below the routes: no connection (so
 * no connection cap, pipelining or drain applies: the caller is this process), a loopback peer,
 * and the `host` header given here (the API's own URL, as a client over HTTP would send).
 */
import type { ApiDispatch } from './httpClient.js';

/** The part of a Fastify instance an in-process call needs (`inject`, light-my-request's). */
export interface Injectable {
  inject(opts: { method: string; url: string; headers: Record<string, string>; payload?: string }): Promise<{
    statusCode: number;
    headers: Record<string, string | string[] | number | undefined>;
    body: string;
  }>;
}

/**
 * Calls `app` in-process; `host`: the API's base URL (for the `host` header its links are made
 * from). Rejects (the client answers an uncertain "no answer") when the app cannot take the call,
 * e.g. once it is closed.
 */
export function injectDispatch(app: Injectable, host: () => string): ApiDispatch {
  return async (req) => {
    const res = await app.inject({
      method: req.method,
      url: req.path,
      headers: { ...req.headers, host: new URL(host()).host },
      ...(req.body === undefined ? {} : { payload: req.body }),
    });
    return {
      status: res.statusCode,
      header: (name) => {
        const v = res.headers[name];
        return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v);
      },
      text: res.body,
    };
  };
}
