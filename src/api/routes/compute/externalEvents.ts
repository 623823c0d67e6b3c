/**
 * Nova's `POST os-server-external-events` (how Cinder tells compute it grew an attached volume:
 * `volume-extended`, from microversion 2.51), under `/v2.1/…`, `/v2.1/{project_id}/…` and
 * `/v2/{tenant_id}/…`. Policy `os_compute_api:os-server-external-events:create` (service or
 * admin). The events name servers of any project. What each event does: compute/externalEvents.ts.
 *
 * Answers 200 when every event was accepted, else 207 (Nova since Ussuri: never 404 for the
 * whole request), with each event's `code` and `status`. A name the request's microversion does
 * not have (`volume-extended` below 2.51) is a 400 for the whole request, as Nova's schema
 * validation refuses it.
 */
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { eventNamesAt, ExternalEventsAnswer, ExternalEventsBody } from '../../schemas/externalEvents.js';
import type { ComputeAPI } from '../../../compute/api.js';
import { errors } from '../../../errors.js';
import { computeRoute } from './route.js';

const RULE = 'os_compute_api:os-server-external-events:create';

/** Registers `POST os-server-external-events` under the three compute prefixes (see the module comment). */
export function registerExternalEvents(app: App, deps: ServerDeps & { compute: ComputeAPI }): void {
  const { compute } = deps;
  computeRoute(app, {
    method: 'POST',
    path: '/os-server-external-events',
    params: {},
    body: ExternalEventsBody,
    schema: {
      tags: ['os-server-external-events'],
      summary: 'Tell compute about events of its servers; `volume-extended` (2.51) grows the guest to the size the host sees',
      response: { 200: ExternalEventsAnswer, 207: ExternalEventsAnswer, ...errorResponses(400, 401, 403) },
    },
    handler: async (req, reply) => {
      // Before the policy check, as Nova validates the body (by version) before it.
      const allowed = eventNamesAt(req.apiVersion);
      const i = req.body.events.findIndex((e) => !allowed.includes(e.name));
      if (i >= 0) {
        throw errors.invalidInput(
          `Invalid input for field/attribute body.events.${i}.name: must be one of ${allowed.map((n) => JSON.stringify(n)).join(', ')} at microversion ${req.apiVersion}`,
        );
      }
      const ctx = await authorize(deps, req, RULE, {});
      const events = await inRequest(req, () => compute.externalInstanceEvents(ctx, req.body.events));
      return reply.status(events.every((e) => e.code === 200) ? 200 : 207).send({ events });
    },
  });
}
