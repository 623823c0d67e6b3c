/**
 * Nova's os-server-external-events shapes (nova/api/openstack/compute/schemas/server_external_events.py),
 * up to the highest compute microversion we serve (2.51). The event names allowed depend on the
 * request's microversion (`EVENT_NAMES_SINCE`); the body schema allows every name of the highest
 * version and the route refuses, for the whole request, a name its version does not have yet.
 */
import { Type, type Static } from '@sinclair/typebox';
import { ApiVersion } from '../microversion.js';
import { Uuid } from './common.js';

/** The event names each microversion adds (2.76 `power-update` and later are above what we serve). */
export const EVENT_NAMES_SINCE: ReadonlyArray<{ since: ApiVersion; names: readonly string[] }> = [
  { since: new ApiVersion(2, 1), names: ['network-changed', 'network-vif-plugged', 'network-vif-unplugged', 'network-vif-deleted'] },
  { since: new ApiVersion(2, 51), names: ['volume-extended'] },
];

/** The event names a request at `version` may send, in Nova's order. */
export function eventNamesAt(version: ApiVersion): string[] {
  return EVENT_NAMES_SINCE.filter((e) => version.atLeast(e.since)).flatMap((e) => e.names);
}

const ALL_NAMES = EVENT_NAMES_SINCE.flatMap((e) => e.names);

/** Nova's InstanceExternalEvent statuses. */
export const EVENT_STATUSES = ['failed', 'completed', 'in-progress'] as const;

export const ExternalEventsBody = Type.Object(
  {
    events: Type.Array(
      Type.Object(
        {
          name: Type.Union(
            ALL_NAMES.map((n) => Type.Literal(n)),
            { description: 'From 2.1 the network-* names; from 2.51 also `volume-extended` (its `tag` is the volume id)' },
          ),
          server_uuid: Uuid,
          status: Type.Optional(Type.Union(EVENT_STATUSES.map((s) => Type.Literal(s)), { description: 'Default `completed`' })),
          tag: Type.Optional(Type.String({ maxLength: 255 })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1 },
    ),
  },
  { additionalProperties: false },
);
/** Body of `POST os-server-external-events`. */
export type ExternalEventsBody = Static<typeof ExternalEventsBody>;

/** One event of the answer: the request's event with its outcome (`code` 200, 400, 404 or 422). */
export const ExternalEventAnswer = Type.Object(
  {
    name: Type.String(),
    server_uuid: Type.String(),
    status: Type.Union(EVENT_STATUSES.map((s) => Type.Literal(s))),
    code: Type.Union([Type.Literal(200), Type.Literal(400), Type.Literal(404), Type.Literal(422)]),
    tag: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

export const ExternalEventsAnswer = Type.Object({ events: Type.Array(ExternalEventAnswer) }, { additionalProperties: false });

