/**
 * Answers made in one event-loop turn reach the kernel together at its end
 * (src/api/transport/batchedWrites.ts), on real TCP sockets: the bytes wait corked in the socket
 * until the turn ends, nothing is lost or reordered, corks stay balanced, and a socket destroyed
 * meanwhile does not stop the others. The HTTP-level paths (keep-alive, pipelining, drain) run
 * through the transport suites, where every API socket batches by default.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { batchWritesPerTurn } from '../../src/api/transport/batchedWrites.js';

interface Pair {
  server: Socket;
  client: Socket;
  received: () => string;
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A connected TCP pair on 127.0.0.1; the server side batches when `batch`. */
async function pair(batch: boolean): Promise<Pair> {
  const srv = createServer();
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = createConnection((srv.address() as { port: number }).port, '127.0.0.1');
  sockets.push(client);
  let got = '';
  client.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const server = await accepted;
  sockets.push(server);
  if (batch) batchWritesPerTurn(server);
  return { server, client, received: () => got };
}

/** What Node's ServerResponse does at the end of every answer. */
function answer(s: Socket, text: string): void {
  s.cork();
  s.write(text);
  s.uncork();
}

async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
}

describe('writes batched per event-loop turn', () => {
  it.each([
    { batch: true, heldInTurn: 5 },
    { batch: false, heldInTurn: 0 },
  ])('hold an answer in the socket until the turn ends when batching is $batch', async ({ batch, heldInTurn }) => {
    const p = await pair(batch);
    answer(p.server, 'hello');
    expect(p.server.writableLength).toBe(heldInTurn);
    await nextTurn();
    expect(p.server.writableLength).toBe(0);
    expect(p.server.writableCorked).toBe(0);
    await until(() => p.received() === 'hello');
    expect(p.received()).toBe('hello');
  });

  it('write every answer of a turn, over several sockets, in order and complete', async () => {
    const pairs = await Promise.all([pair(true), pair(true), pair(true)]);
    pairs.forEach((p, i) => {
      answer(p.server, `a${i};`);
      answer(p.server, `b${i};`);
    });
    expect(pairs.map((p) => p.server.writableLength)).toEqual([6, 6, 6]);
    await nextTurn();
    expect(pairs.map((p) => p.server.writableLength)).toEqual([0, 0, 0]);
    await until(() => pairs.every((p, i) => p.received() === `a${i};b${i};`));
    expect(pairs.map((p) => p.received())).toEqual(['a0;b0;', 'a1;b1;', 'a2;b2;']);
  });

  it('keep nested corks balanced: the socket is corked until its last uncork is replayed', async () => {
    const p = await pair(true);
    p.server.cork();
    p.server.cork();
    p.server.write('x');
    p.server.uncork();
    await nextTurn();
    // One uncork of two: still corked, as without batching.
    expect(p.server.writableCorked).toBe(1);
    expect(p.server.writableLength).toBe(1);
    p.server.uncork();
    await nextTurn();
    expect(p.server.writableCorked).toBe(0);
    await until(() => p.received() === 'x');
    expect(p.received()).toBe('x');
  });

  it('let a socket destroyed before the turn ends drop its bytes without stopping the others', async () => {
    const [gone, kept] = await Promise.all([pair(true), pair(true)]);
    answer(gone.server, 'lost');
    answer(kept.server, 'kept');
    gone.server.destroy();
    await nextTurn();
    await until(() => kept.received() === 'kept');
    expect(kept.received()).toBe('kept');
    expect(gone.received()).toBe('');
  });

  it('flush an answer made in a later turn in that turn', async () => {
    const p = await pair(true);
    answer(p.server, 'one;');
    await nextTurn();
    answer(p.server, 'two;');
    expect(p.server.writableLength).toBe(4);
    await nextTurn();
    expect(p.server.writableLength).toBe(0);
    await until(() => p.received() === 'one;two;');
    expect(p.received()).toBe('one;two;');
  });
});
