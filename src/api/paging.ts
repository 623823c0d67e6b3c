/**
 * Paging of list endpoints, as Nova and Cinder do it: `limit` and `marker` query parameters in,
 * a page of items and a `rel: next` link out when more items follow. The store pages in SQL
 * (keyset), so a page costs the same whatever the listing's length.
 */
import type { PageQuery } from '../db/store.js';
import { MAX_LIMIT, type ListQuery } from './schemas/paging.js';

/** A link in Nova's and Cinder's `links` lists; list endpoints give `rel: 'next'` with the next page's URL. */
export interface Link {
  rel: string;
  href: string;
}

/** The page the client asked for, within MAX_LIMIT. */
export function pageOf(query: ListQuery): { limit: number; marker: string | undefined } {
  const limit = query.limit === undefined ? MAX_LIMIT : Math.min(Number(query.limit), MAX_LIMIT);
  return { limit, marker: query.marker };
}

/** What to ask the store for: one item more than the page shows, to know whether more follow. */
export function storePage(page: { limit: number; marker: string | undefined }): PageQuery {
  return { limit: page.limit + 1, marker: page.marker };
}

/** How `pageResult` writes the next-page link. */
export interface NextLinkOptions {
  /** `http://host:port` to make the link absolute, as Nova's links are; relative (the path only) without it. */
  origin?: string;
  /**
   * Keep the request's other query parameters (filters such as `name` or `all_tenants`), sorted
   * by name, with `marker` set to the last item: Nova's `_get_next_link`. Without it the link
   * carries only `limit` and `marker`.
   */
  keepQuery?: boolean;
}

/**
 * The page to answer from the store's `rows` (fetched with `storePage`), and Nova's next-page
 * link when more items follow: the same path with `limit` and the last item's id as `marker`
 * (see NextLinkOptions for absolute links and kept filters). `url` is the request's URL.
 */
export function pageResult<T>(rows: T[], page: { limit: number }, idOf: (item: T) => string, url: string, opts: NextLinkOptions = {}): { items: T[]; next: Link[] | undefined } {
  if (rows.length <= page.limit) return { items: rows, next: undefined };
  // `limit=0` asks for nothing; Nova gives no link for it either.
  if (page.limit === 0) return { items: [], next: undefined };
  const items = rows.slice(0, page.limit);
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const marker = idOf(items.at(-1)!);
  let query: string;
  if (opts.keepQuery) {
    const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    params.delete('marker');
    params.set('limit', String(page.limit));
    params.append('marker', marker);
    params.sort();
    query = params.toString();
  } else {
    query = `limit=${page.limit}&marker=${encodeURIComponent(marker)}`;
  }
  return { items, next: [{ rel: 'next', href: `${opts.origin ?? ''}${path}?${query}` }] };
}
