/**
 * The unauthenticated version documents of both APIs, shaped as Nova's and Cinder's
 * (docs/notes/f-openstack-on-the-wire.md §1.6): one schema per shape, closed
 * (`additionalProperties: false`) as tempest's are.
 */
import { Type } from '@sinclair/typebox';

const closed = { additionalProperties: false } as const;

/** A version link: `self` (absolute, built from the request's Host) or `describedby` (the docs, `type: text/html`). */
export const VersionLink = Type.Object({ rel: Type.String(), href: Type.String(), type: Type.Optional(Type.String()) }, closed);

/** What a version is served as: `base` `application/json`, `type` the vendor media type with its version. */
export const MediaType = Type.Object({ base: Type.String(), type: Type.String() }, closed);

const versionFields = {
  id: Type.String({ description: '`v2.0`, `v2.1` (compute) or `v3.0` (volume)' }),
  status: Type.String({ description: '`CURRENT` or `SUPPORTED`' }),
  version: Type.String({ description: 'The highest microversion served; empty for compute v2.0, which has none' }),
  min_version: Type.String({ description: 'The lowest microversion served; empty for compute v2.0' }),
  updated: Type.String({ description: 'ISO 8601, UTC, as upstream dates the version' }),
};

/** One entry of Nova's `GET /` list: only a `self` link, no media types. */
export const ComputeVersionSummary = Type.Object({ ...versionFields, links: Type.Array(VersionLink) }, closed);

/** Nova's `GET /`: `{"versions": [...]}` (200). */
export const ComputeVersionList = Type.Object({ versions: Type.Array(ComputeVersionSummary) }, closed);

/** One version in full: `self` and `describedby` links and its media types (Nova's `GET /v2.1/`, every entry of Cinder's lists). */
export const VersionDetail = Type.Object({ ...versionFields, links: Type.Array(VersionLink), 'media-types': Type.Array(MediaType) }, closed);

/** Nova's `GET /v2.1/` and `GET /v2/`: `{"version": {...}}` (200). */
export const ComputeVersionDocument = Type.Object({ version: VersionDetail }, closed);

/** Cinder's `GET /` (300 Multiple Choices) and `GET /v3/` (200): both a `{"versions": [...]}` list. */
export const VolumeVersionList = Type.Object({ versions: Type.Array(VersionDetail) }, closed);
