/** What the client commands share: their settings, the client, the project they act in, lists read to their end. */
import { ApiClient, VOLUME_LATEST } from '../rpc/httpClient.js';
import type { ClientConfig } from '../config.js';

/**
 * The HTTP client of the compute or volume API, with the configured token. Throws Error when no
 * token is configured (`--token` or ONLINE_EXTEND_TOKEN).
 */
export function apiClient(config: ClientConfig, api: 'compute' | 'volume'): ApiClient {
  if (!config.token) throw new Error('no token: pass --token or set ONLINE_EXTEND_TOKEN (see `online-extend token create`)');
  // The volume API at its latest microversion: extending an attached volume needs 3.42.
  return api === 'compute' ? new ApiClient({ url: config.url, token: config.token }) : new ApiClient({ url: config.volumeUrl, token: config.token, headers: VOLUME_LATEST });
}

/**
 * The project in the URL, percent-encoded: `--project`, else ONLINE_EXTEND_PROJECT. There is no
 * default: the API refuses a URL whose project is not the token's (400), so guessing one only
 * hides the mistake. Throws Error when none is configured.
 */
export function projectOf(config: ClientConfig): string {
  if (!config.project) throw new Error("no project: pass --project or set ONLINE_EXTEND_PROJECT (the token's project)");
  return encodeURIComponent(config.project);
}

/**
 * Every item of a paged list (Nova's and Cinder's `limit`/`marker`): follows the `rel: next`
 * links in `<key>_links` until there is none. Returns the items and the first page's body shape.
 */
export async function listAll<T>(client: ApiClient, path: string, key: string): Promise<T[]> {
  const items: T[] = [];
  let next: string | undefined = path;
  for (let pages = 0; next !== undefined; pages++) {
    if (pages > 100_000) throw new Error(`${path}: the listing does not end`);
    const res: { body: Record<string, unknown> } = await client.request<Record<string, unknown>>('GET', next);
    items.push(...((res.body[key] as T[] | undefined) ?? []));
    const links = res.body[`${key}_links`] as Array<{ rel: string; href: string }> | undefined;
    const href = links?.find((l) => l.rel === 'next')?.href;
    // Cinder's and Nova's next links are absolute (built from the Host): the client asks by path.
    next = href === undefined ? undefined : /^https?:\/\//i.test(href) ? ((u) => u.pathname + u.search)(new URL(href)) : href;
  }
  return items;
}
