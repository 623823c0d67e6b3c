/**
 * Shared schema pieces. Each schema object validates requests, types the handlers (TypeBox) and
 * feeds the OpenAPI document: one source of truth.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { PROJECT_ID_PATTERN, PROJECT_ID_RULE } from '../../auth/ids.js';

export { PROJECT_ID_PATTERN, PROJECT_ID_RULE };

/** 1 PiB: far above any single volume we expect, low enough to stay an exact JSON integer. */
export const MAX_VOLUME_BYTES = 2 ** 50;

export const Uuid = Type.String({
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
  description: 'A UUID',
});

/** Path ids are plain strings so an unknown or malformed id is a 404, as in Nova, not a 400. */
export const PathId = Type.String({ minLength: 1, maxLength: 255 });

/**
 * The project (tenant) in a URL: Keystone-like ids, 1–64 characters of `A-Z a-z 0-9 _ . -`, and
 * not `.` or `..`. Unlike server and volume ids, a project id outside this alphabet is a 400: it
 * must equal the token's project anyway, and it ends up as the owner of what is created.
 */
export const ProjectId = Type.String({ pattern: PROJECT_ID_PATTERN, description: `Project id: ${PROJECT_ID_RULE}; must be the token's project` });

export const Bytes = Type.Integer({
  minimum: 512,
  maximum: MAX_VOLUME_BYTES,
  multipleOf: 512,
  description: 'Size in bytes: a positive multiple of 512',
});

/** Nova's error body: `{"<faultName>": {"code": N, "message": "..."}}`. */
export const Fault = Type.Record(
  Type.String(),
  Type.Object({
    code: Type.Integer(),
    message: Type.String(),
    error_code: Type.String({ description: 'The error catalogue code (src/errors.ts), e.g. VolumeShrinkRefused' }),
    final: Type.Boolean({ description: 'true: trying again with the same input gives the same answer; false: uncertain, try again later' }),
    reason: Type.Optional(Type.String({ description: "The driver's or backend's own reason, when it gave one" })),
  }),
  { description: 'Nova-shaped fault, e.g. {"badRequest": {"code": 400, "message": "...", "error_code": "InvalidInput", "final": true}}' },
);

/** OpenAPI response schemas for the given HTTP statuses, each a Nova fault body (`Fault`); spread into a route's `response`. */
export function errorResponses(...codes: number[]): Record<number, TSchema> {
  return Object.fromEntries(codes.map((c) => [c, Fault]));
}
