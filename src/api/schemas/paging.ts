/** Query strings of list endpoints: Nova's and Cinder's `limit` and `marker`. */
import { Type, type Static } from '@sinclair/typebox';

/**
 * The largest page a list endpoint answers, and the page size when `limit` is absent: Nova's
 * `[api] max_limit` and Cinder's `osapi_max_limit` default, 1000. A larger `limit` is lowered
 * to it, as both do.
 */
export const MAX_LIMIT = 1000;

export const ListQuery = Type.Object(
  {
    // Query values arrive as text (the API does not coerce types): a decimal integer.
    limit: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,20}$',
        description: `Page size, a non-negative integer; default and maximum ${MAX_LIMIT} (a larger value is lowered to ${MAX_LIMIT})`,
      }),
    ),
    marker: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 255,
        description: 'The id of the last item of the previous page (the next-page link carries it); an id not in the listing is a 400',
      }),
    ),
  },
  { additionalProperties: false },
);
/** The `limit` and `marker` query strings of a list endpoint, as text (`limit` is parsed by `pageOf`). */
export type ListQuery = Static<typeof ListQuery>;
