/**
 * The state of one connection as the transport sees it (requests in flight, output waiting), and
 * the questions asked of it: is it serving, writing, how many bytes wait for its client.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Node's HTTP internals this module relies on (Node 20–24): the response being written on a
 * socket, and the socket's parser, whose `onIncoming` returns llhttp's on_headers_complete code.
 */
export type HttpSocket = Socket & {
  _httpMessage?: ServerResponse | null;
  parser?: { onIncoming?: ((req: IncomingMessage, keepAlive: boolean) => number) | null } | null;
};

/** One connection of a ConnectionGuard. */
export interface Conn {
  socket: Socket;
  /** Requests handed to the routes (and a refusal) whose response has not closed, in arrival order. */
  inFlight: Map<IncomingMessage, ServerResponse>;
  /** Set once no further request of this connection is to be answered: it closes after those in flight. */
  refusing: boolean;
  /** Since when response bytes have waited in this process with no write completing (epoch ms). */
  stalledSince: number | undefined;
  /** Bytes of this socket whose writes had completed when `stalledSince` was set. */
  sentMark: number;
}

/** Sockets of every guard, for answerAndClose (which gets only the socket). */
export const connOf = new WeakMap<Socket, Conn>();

/** A request whose body has fully arrived is being answered (its answer is not yet made). */
export function isServing(conn: Conn): boolean {
  for (const [req, res] of conn.inFlight) if (req.complete && !res.writableEnded) return true;
  return false;
}

/** Some answer made on this connection has not yet reached the kernel. */
export function hasOutput(conn: Conn): boolean {
  for (const res of conn.inFlight.values()) if (res.writableEnded && !res.writableFinished) return true;
  return unsentBytes(conn) > 0;
}

/**
 * Response bytes of `conn` waiting in this process: queued on the socket, plus those of answers
 * made but waiting behind an earlier one (Node gives a pipelined answer the socket in turn).
 */
export function unsentBytes(conn: Conn): number {
  let n = conn.socket.writableLength;
  for (const res of conn.inFlight.values()) if (res.socket !== conn.socket) n += res.writableLength;
  return n;
}

/** Bytes of `socket` whose writes have completed (taken by the kernel). */
export function sentBytes(socket: Socket): number {
  return (socket.bytesWritten ?? 0) - socket.writableLength;
}
