/**
 * The wire format of compute RPC over RabbitMQ, shared by the client (client.ts) and the agent's
 * server (server.ts). Names follow oslo.messaging's RPC: a topic exchange (Nova's
 * `control_exchange`, `nova`), one queue per host bound as `compute.<host>` (topic `compute`,
 * server = host), and a fanout exchange `compute_fanout` for casts to every host.
 *
 * A request is JSON `{"method": M, "args": {...}}` with properties `correlationId`, `replyTo`
 * (RabbitMQ's direct reply-to), `expiration` (ms: the broker drops a call nobody took in time)
 * and header `x-deadline` (epoch ms: the agent drops a call whose caller has given up; hosts'
 * clocks are assumed synchronised, as for Nova's service heartbeats). A reply is
 * `{"ok": true, "result": R}` or `{"ok": false, "error": {code, message, final, reason?}}`: a
 * ServiceError's public fields, never its `detail`.
 *
 * Each method is a typed action (Firecracker's style): `parseRpcAction` checks a request against
 * RPC_METHODS and answers `{method, args}` typed by method, or a final InternalError for an
 * unknown method or bad arguments (the API and the agent run different versions).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { CATALOGUE, errors, isErrorCode, ServiceError, type ErrorCode } from '../../errors.js';
import type { AttachSpec, SpawnSpec } from '../../virt/driver.js';

/** The topic exchange calls are published to (oslo.messaging's control_exchange; Nova's is `nova`). */
export const RPC_EXCHANGE = 'nova';
/** The fanout exchange of casts to every compute agent (oslo.messaging's `<topic>_fanout`). */
export const FANOUT_EXCHANGE = 'compute_fanout';
/** RabbitMQ's direct reply-to pseudo-queue. */
export const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
/** The header holding a call's deadline, epoch ms. */
export const DEADLINE_HEADER = 'x-deadline';

/** The queue and routing key of `host`'s agent (oslo.messaging's `<topic>.<server>`). */
export function hostQueue(host: string): string {
  return `compute.${host}`;
}

/**
 * Whether `host` can name a queue: non-empty, at most 200 bytes (AMQP short strings hold 255,
 * with `compute.` before it), and without the topic wildcards `*` and `#`, which would make the
 * agent's binding match other hosts' calls.
 */
export function validHost(host: string): boolean {
  return host.length > 0 && Buffer.byteLength(host) <= 200 && !/[*#]/.test(host);
}

const Id = Type.String({ minLength: 1, maxLength: 255 });
const Server = { serverId: Id };
const Volume = { serverId: Id, volumeId: Id };

// The driver's specs are checked for the fields the agent routes on; the driver checks the rest
// as it does for an in-process call.
const AttachSpecSchema = Type.Unsafe<AttachSpec>(
  Type.Object({ volumeId: Id, kind: Type.String(), source: Type.String() }, { additionalProperties: true }),
);
const SpawnSpecSchema = Type.Unsafe<SpawnSpec>(
  Type.Object({ id: Id, name: Type.String(), projectId: Type.String(), userId: Type.String(), image: Type.Object({ kind: Type.String() }, { additionalProperties: true }) }, { additionalProperties: true }),
);

/** Every method a compute agent answers, with its arguments (the ComputeRpc methods, less `host`). */
export const RPC_METHODS = {
  capabilities: Type.Object({}, { additionalProperties: false }),
  syncInventory: Type.Object({}, { additionalProperties: false }),
  syncServer: Type.Object(Server, { additionalProperties: false }),
  rescan: Type.Object(Volume, { additionalProperties: false }),
  getHostBytes: Type.Object(Volume, { additionalProperties: false }),
  extendAttached: Type.Object({ ...Volume, bytes: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  extendToHostSize: Type.Object(Volume, { additionalProperties: false }),
  attachVolume: Type.Object({ ...Server, spec: AttachSpecSchema }, { additionalProperties: false }),
  detachVolume: Type.Object(Volume, { additionalProperties: false }),
  spawn: Type.Object({ spec: SpawnSpecSchema }, { additionalProperties: false }),
  destroy: Type.Object(Server, { additionalProperties: false }),
  growGuestFilesystem: Type.Object(Volume, { additionalProperties: false }),
} as const satisfies Record<string, TSchema>;

/** A method name of RPC_METHODS. */
export type RpcMethod = keyof typeof RPC_METHODS;
/** The arguments of method `M`. */
export type RpcArgs<M extends RpcMethod> = Static<(typeof RPC_METHODS)[M]>;
/** A checked request: one method with its arguments. */
export type RpcAction = { [M in RpcMethod]: { method: M; args: RpcArgs<M> } }[RpcMethod];

const CHECKS = new Map<string, ReturnType<typeof TypeCompiler.Compile<TSchema>>>(Object.entries(RPC_METHODS).map(([m, s]) => [m, TypeCompiler.Compile<TSchema>(s)]));

/** `body` (a request's parsed JSON) as a typed action; InternalError (500, final) when it is not one. */
export function parseRpcAction(host: string, body: unknown): RpcAction {
  const method = body && typeof body === 'object' ? (body as { method?: unknown }).method : undefined;
  const check = typeof method === 'string' ? CHECKS.get(method) : undefined;
  if (!check) {
    throw errors.internal(`Compute host ${host} does not know the RPC method ${JSON.stringify(String(method)).slice(0, 80)} (the API and the compute agent run different versions).`);
  }
  const args = (body as { args?: unknown }).args ?? {};
  if (!check.Check(args)) {
    const first = check.Errors(args).First();
    throw errors.internal(`Compute host ${host} refused the arguments of RPC method ${method}: ${first ? `${first.path || '/'} ${first.message}` : 'invalid'}.`);
  }
  return { method, args } as RpcAction;
}

/** A reply on the wire. */
export type RpcReply = { ok: true; result?: unknown } | { ok: false; error: WireError };

/** A ServiceError's public fields, as a reply carries them. */
export interface WireError {
  code: ErrorCode;
  message: string;
  final: boolean;
  reason?: string;
}

/** The public fields of `err` (never `detail`). */
export function toWireError(err: ServiceError): WireError {
  return { code: err.code, message: err.message, final: err.final, ...(err.reason === undefined ? {} : { reason: err.reason }) };
}

/** A ServiceError that came back from a compute agent (as httpClient's ApiError comes back over HTTP). */
export class RemoteError extends ServiceError {}

/** The ServiceError a reply's error describes (code, message, final and reason as sent); an unknown code becomes InternalError. */
export function fromWireError(e: unknown): RemoteError {
  const w = (e && typeof e === 'object' ? e : {}) as Partial<Record<keyof WireError, unknown>>;
  const code: ErrorCode = isErrorCode(w.code) ? w.code : 'InternalError';
  const message = typeof w.message === 'string' ? w.message : 'The compute host answered with an error it did not describe.';
  const final = typeof w.final === 'boolean' ? w.final : CATALOGUE[code].final;
  return new RemoteError(code, message, { final, ...(typeof w.reason === 'string' ? { reason: w.reason } : {}) });
}
