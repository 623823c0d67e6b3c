/**
 * The server's task state (Nova's task_state) for the operations compute must not overlap.
 */
import type { Logger } from 'pino';
import type { ComputeStore, ServerRecord } from '../db/store.js';
import { errors } from '../errors.js';
import type { RequestContext } from '../context.js';
import { withTimings } from '../util/timing.js';

/**
 * The task states (Nova's task_state, `OS-EXT-STS:task_state`) compute writes while an operation
 * that must not overlap another of its kind on the same server runs: attach and detach (two
 * plugs racing for one device name, an unplug under a plug). Written with the store's
 * conditional update (null → task), cleared in `finally`, and cleared at start-up for a process
 * that died with one set (`clearStaleTasks`). Extends write none: as in Nova, an extend of one
 * volume does not block other volumes of the same server (the manager serialises calls per volume).
 */
export const VOLUME_TASKS = { attach: 'attaching_volume', detach: 'detaching_volume' } as const;
/** See VOLUME_TASKS. */
export type VolumeTask = keyof typeof VOLUME_TASKS;
/** Nova's task state while a server is deleted (compute/servers.ts); its volumes are detached in it. */
export const DELETING = 'deleting';
/** The values of VOLUME_TASKS. */
export const VOLUME_TASK_STATES: ReadonlySet<string> = new Set(Object.values(VOLUME_TASKS));

/**
 * Runs `fn` with the server's task state set to `VOLUME_TASKS[task]`: set with a conditional
 * update from idle (ComputeStore.setTaskState), so a second attach or detach on the same server
 * while one is under way is refused with InstanceBusy (409, uncertain: try again when it is done)
 * before anything is asked of the volume service, and cleared when `fn` ends, whatever its outcome.
 */
export async function withTask<T>(store: ComputeStore, log: Logger, ctx: RequestContext, server: ServerRecord, task: VolumeTask, fn: () => Promise<T>): Promise<T> {
  const state = VOLUME_TASKS[task];
  // The request's Server-Timing parts (util/timing.ts): `fn` and the store calls after an await
  // run as part of it.
  const within = <R>(call: () => R): R => withTimings(ctx.timings, call);
  if (!(await within(() => store.setTaskState(server.id, state, null)))) {
    const now = await within(() => store.getServer(server.id));
    throw errors.instanceBusy(server.id, now?.taskState ?? state, `${task} volume`);
  }
  try {
    return await within(fn);
  } finally {
    // A failed clear (the database refusing writes) leaves the task to the next start-up's
    // clearStaleTasks; the caller's answer is what fn gave.
    await within(() => store.setTaskState(server.id, null, state)).catch((err: unknown) => {
      log.error({ err, serverId: server.id, task: state, requestId: ctx.requestId }, 'could not clear the task state');
    });
  }
}

/**
 * At start-up: clear the VOLUME_TASKS states left on `host`'s servers by a process that died with
 * an attach or detach under way (Nova's init_host resets such tasks); other task states are kept.
 * Nothing of this process can be under way yet; the volumes of those operations are settled by
 * the volume service's reconciler. Answers the ids of the servers cleared.
 */
export async function clearStaleTasks(store: ComputeStore, log: Logger, host: string): Promise<string[]> {
  const cleared: string[] = [];
  for (const s of await store.listServers()) {
    if (s.host !== host || s.taskState === null || !VOLUME_TASK_STATES.has(s.taskState)) continue;
    if (await store.setTaskState(s.id, null, s.taskState)) cleared.push(s.id);
  }
  if (cleared.length) log.warn({ servers: cleared }, 'cleared task states left by an earlier process');
  return cleared;
}
