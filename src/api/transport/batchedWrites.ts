/**
 * Answers made in one event-loop turn reach the kernel together, at the turn's end.
 *
 * Why: on a virtual machine, a socket write that wakes a sleeping reader on another vCPU costs the
 * writer an inter-processor interrupt, a VM exit (perf on this project's machine: the
 * `_raw_spin_unlock_irqrestore` of `sock_def_readable`, 7–26% of the API process's CPU under load).
 * Node writes each answer the moment it is made, so with our handlers' ~40 µs per answer a client
 * that reads fast is asleep again before the next write, and every answer pays the wake-up. Written
 * back to back at the turn's end, the first answer wakes the reader and the others find it awake.
 * Measured 2026-11-30 (GET get_blockdev, 10 connections, /proc CPU per request, interleaved runs):
 * 46–47 → 34 µs per answer. The cost is latency within a busy turn: an answer waits for the
 * others the same turn makes (the turn's work, ~7 answers here under full load); an answer made
 * alone in its turn goes out right after it (setImmediate runs after the poll phase).
 *
 * How: Node's ServerResponse ends every answer with `socket.cork(); write; socket.uncork()`, which
 * flushes at once. The socket's `uncork` is replaced by one that counts the calls and replays them
 * in one setImmediate per turn, so the bytes wait corked in the socket's own buffer (where the
 * ConnectionGuard's unsent-bytes bounds see them). Nothing else changes: every cork is still
 * matched by its uncork, in order; a socket destroyed meanwhile drops its bytes as it would have.
 */
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';

const realUncork = Writable.prototype.uncork;
/** Sockets with uncorks waiting for the turn's end, and how many each. */
const waiting = new Map<Socket, number>();
let flushScheduled = false;

function flushTurn(): void {
  flushScheduled = false;
  for (const [socket, uncorks] of waiting) {
    waiting.delete(socket);
    for (let i = 0; i < uncorks; i++) realUncork.call(socket);
  }
}

function uncorkAtTurnEnd(this: Socket): void {
  waiting.set(this, (waiting.get(this) ?? 0) + 1);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushTurn);
  }
}

/** Makes `socket`'s writes wait for the end of the event-loop turn they are made in (see the file header). */
export function batchWritesPerTurn(socket: Socket): void {
  socket.uncork = uncorkAtTurnEnd;
}
