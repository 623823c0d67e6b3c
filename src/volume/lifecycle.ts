/**
 * The volume lifecycle: one declarative table decides every volume action against every status,
 * attached or not. The routes (through VolumeService), the attach service and the extend workflow
 * all consult it, and the store applies its decision with a conditional update, so what was
 * decided is still true when the change lands.
 *
 * Rules the table encodes (Cinder's volume states, tightened where Cinder loses data):
 * - A volume with an attachment is never deleted, whatever its status (`attached`, 409).
 * - A status that ends by itself (creating, attaching, detaching, extending, deleting) refuses
 *   other actions as `busy` (409, uncertain: try again when it is done).
 * - `error` refuses everything but delete; `error_extending` can be extended again (every step of
 *   the extend is idempotent, so no reset-state is needed) and, once detached, deleted.
 * - Whether an extend needs `volume:extend_attached_volume` depends on the attachment, never on
 *   the status (`policiesFor`).
 *
 *   creating ─▶ available ─attach─▶ attaching ─▶ in-use ─detach─▶ detaching ─▶ available
 *   available ─extend─▶ extending ─▶ available           in-use ─extend─▶ extending ─▶ in-use
 *                                                                      └──▶ error_extending
 *   available | error | error_extending (detached) ─delete─▶ deleting ─▶ (gone)
 */
import type { VolumeRecord, VolumeStatus } from '../db/store.js';
import type { ServerState } from '../rpc/shapes.js';
import { errors, type ServiceError } from '../errors.js';

/** Every volume status (Cinder's names), in the table's order. */
export const VOLUME_STATUSES = [
  'creating',
  'available',
  'attaching',
  'in-use',
  'detaching',
  'extending',
  'error_extending',
  'error',
  'deleting',
] as const satisfies readonly VolumeStatus[];

/** The actions the table decides. */
export const VOLUME_ACTIONS = ['attach', 'detach', 'extend', 'delete'] as const;
/** One of VOLUME_ACTIONS. */
export type VolumeAction = (typeof VOLUME_ACTIONS)[number];

/** Why an action is refused: each kind has one error (see `refusal`). */
export type Refusal = 'busy' | 'invalid_state' | 'attached' | 'not_attached';

/** One cell of the table: the status the action moves the volume to, or why it is refused. */
export type Cell = { to: VolumeStatus } | { refuse: Refusal };

type Row = { detached: Cell; attached: Cell };

const to = (status: VolumeStatus): Cell => ({ to: status });
const refuse = (why: Refusal): Cell => ({ refuse: why });
const both = (cell: Cell): Row => ({ detached: cell, attached: cell });
/** A status that ends by itself: busy, but an attachment is still named as such for delete. */
const busy: Row = both(refuse('busy'));

/**
 * THE table: action × status × attachment → next status or refusal. Every cell is spelled out;
 * test/volume/lifecycle.test.ts walks all of them through the API.
 */
export const LIFECYCLE: Readonly<Record<VolumeAction, Readonly<Record<VolumeStatus, Row>>>> = {
  attach: {
    creating: busy,
    available: { detached: to('attaching'), attached: refuse('attached') },
    attaching: busy,
    'in-use': { detached: refuse('invalid_state'), attached: refuse('attached') },
    detaching: busy,
    extending: busy,
    error_extending: { detached: refuse('invalid_state'), attached: refuse('attached') },
    error: both(refuse('invalid_state')),
    deleting: busy,
  },
  detach: {
    creating: busy,
    available: { detached: refuse('not_attached'), attached: to('detaching') },
    attaching: busy,
    'in-use': { detached: refuse('not_attached'), attached: to('detaching') },
    detaching: busy,
    extending: busy,
    error_extending: { detached: refuse('not_attached'), attached: to('detaching') },
    error: { detached: refuse('not_attached'), attached: to('detaching') },
    deleting: busy,
  },
  extend: {
    creating: busy,
    available: { detached: to('extending'), attached: refuse('invalid_state') },
    attaching: busy,
    'in-use': { detached: refuse('invalid_state'), attached: to('extending') },
    detaching: busy,
    extending: busy,
    error_extending: { detached: to('extending'), attached: to('extending') },
    error: both(refuse('invalid_state')),
    deleting: busy,
  },
  delete: {
    creating: { detached: refuse('busy'), attached: refuse('attached') },
    available: { detached: to('deleting'), attached: refuse('attached') },
    attaching: { detached: refuse('busy'), attached: refuse('attached') },
    'in-use': { detached: refuse('invalid_state'), attached: refuse('attached') },
    detaching: { detached: refuse('busy'), attached: refuse('attached') },
    extending: { detached: refuse('busy'), attached: refuse('attached') },
    error_extending: { detached: to('deleting'), attached: refuse('attached') },
    error: { detached: to('deleting'), attached: refuse('attached') },
    deleting: { detached: refuse('busy'), attached: refuse('attached') },
  },
};

/** How each action ends: the status after success or failure, by attachment. */
export const OUTCOMES: Readonly<Record<Exclude<VolumeAction, 'detach' | 'delete'>, { done: Row; failed: Row }>> = {
  attach: { done: both(to('in-use')), failed: both(to('available')) },
  // An attached volume whose extend failed keeps the cause in error_extending; storage-only
  // extends of detached volumes go back to available (the backend's extend is idempotent and
  // measured, so nothing is uncertain about the recorded size).
  extend: { done: { detached: to('available'), attached: to('in-use') }, failed: { detached: to('available'), attached: to('error_extending') } },
};
// detach: done → available; failed → back to the status it had (the disk is still plugged in).
// delete: done → the record is removed; failed → error (the backend may be half gone).

/** Whether the volume has an attachment (a server recorded), whatever its status. */
export function isAttached(v: Pick<VolumeRecord, 'serverId'>): boolean {
  return v.serverId !== null;
}

/** What `decide` answers: the next status, or the refusal and its error. */
export type Decision = { ok: true; to: VolumeStatus } | { ok: false; refusal: Refusal; error: ServiceError };

/** The table's answer for `action` on `v` as it is now. */
export function decide(action: VolumeAction, v: Pick<VolumeRecord, 'id' | 'status' | 'serverId'>): Decision {
  const cell = LIFECYCLE[action][v.status][isAttached(v) ? 'attached' : 'detached'];
  if ('to' in cell) return { ok: true, to: cell.to };
  return { ok: false, refusal: cell.refuse, error: refusal(cell.refuse, action, v) };
}

/** The status an action leaves the volume in. */
export function outcome(action: keyof typeof OUTCOMES, result: 'done' | 'failed', attached: boolean): VolumeStatus {
  const cell = OUTCOMES[action][result][attached ? 'attached' : 'detached'];
  if (!('to' in cell)) throw new Error(`lifecycle: no outcome for ${action}/${result}`);
  return cell.to;
}

/** Every status from which `action` may start with the given attachment (for conditional updates). */
export function startStatuses(action: VolumeAction, attached: boolean): VolumeStatus[] {
  return VOLUME_STATUSES.filter((s) => 'to' in LIFECYCLE[action][s][attached ? 'attached' : 'detached']);
}

/** The catalogue error of a refusal: VolumeAttached, VolumeBusy (uncertain) or VolumeInvalidState (409). */
export function refusal(why: Refusal, action: VolumeAction, v: Pick<VolumeRecord, 'id' | 'status' | 'serverId'>): ServiceError {
  switch (why) {
    case 'attached':
      return errors.volumeAttached(v.id, v.serverId ?? 'unknown', action);
    case 'busy':
      return errors.volumeBusy(v.id, v.status, action);
    case 'not_attached':
      return errors.volumeInvalidState(v.id, `${v.status} (not attached)`, action);
    case 'invalid_state':
      return errors.volumeInvalidState(v.id, v.status, action);
  }
}

/**
 * The policy rules an action needs, keyed on the attachment (Cinder's
 * `volume:extend_attached_volume` guards every extend of a volume that has an attachment, whatever
 * its status: an error_extending volume is as attached as an in-use one).
 */
export function policiesFor(action: VolumeAction, attached: boolean): string[] {
  switch (action) {
    case 'extend':
      return attached ? ['volume:extend', 'volume:extend_attached_volume'] : ['volume:extend'];
    case 'delete':
      return ['volume:delete'];
    case 'attach':
      return ['volume:attach'];
    case 'detach':
      return ['volume:detach'];
  }
}

/**
 * How an attached volume is extended, by the state of its server (Nova's extend_volume, and
 * Proxmox): a running or paused guest is resized live; a stopped one is extended offline (storage
 * and host grow, the guest sees the size when it next starts); anything else cannot work and is
 * refused before anything changes.
 */
export type ExtendMode = 'online' | 'offline';

/** See ExtendMode: the mode for each server state, or `refuse`. */
export const EXTEND_MODE_BY_SERVER_STATE: Readonly<Record<ServerState, ExtendMode | 'refuse'>> = {
  active: 'online',
  paused: 'online',
  shutoff: 'offline',
  // A suspended guest's saved memory still describes the old disk; resizing under it is unsafe.
  suspended: 'refuse',
  crashed: 'refuse',
  building: 'refuse',
  migrating: 'refuse',
  error: 'refuse',
  unknown: 'refuse',
};

/** The extend mode for a server in `state`; InstanceInvalidState (409) where no extend can work. */
export function extendMode(serverId: string, state: ServerState): ExtendMode {
  const mode = EXTEND_MODE_BY_SERVER_STATE[state] ?? 'refuse';
  if (mode === 'refuse') throw errors.instanceInvalidState(serverId, state, 'extend attached volume');
  return mode;
}
