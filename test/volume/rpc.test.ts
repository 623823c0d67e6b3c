/**
 * The RPC boundary's clients (src/rpc): a service not listening yet, or not answering, is an
 * uncertain error with a catalogue code (never a status code or a message to parse), and a
 * refusal crosses with its code and its final flag.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { ServiceCatalog } from '../../src/rpc/catalog.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { HttpVolumeClient } from '../../src/rpc/volumeClient.js';
import { ApiError } from '../../src/rpc/httpClient.js';
import { injectDispatch } from '../../src/rpc/inProcess.js';
import Fastify, { type FastifyInstance } from 'fastify';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A real HTTP server on 127.0.0.1 answering every request with `status` and `body`; its URL. */
async function answering(status: number, body: unknown): Promise<string> {
  server = createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', 'x-openstack-request-id': 'req-00000000-0000-7000-8000-000000000000' });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return `http://127.0.0.1:${addr.port}`;
}

const caught = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

describe('the RPC clients', () => {
  it('answers ServiceUnavailable (503, uncertain) for a call to a service the catalog has no endpoint for yet', async () => {
    const catalog = new ServiceCatalog();
    const volumes = new HttpVolumeClient({ url: catalog.endpoint('volume') });
    const err = await caught(volumes.attach('t', 'p', 's', 'v', undefined));
    expect(err).toMatchObject({ code: 'ServiceUnavailable', status: 503, final: false });
  });

  it.each([
    { name: 'compute', call: (url: string) => new HttpComputeClient({ url, token: 't', timeoutMs: 2_000 }).connections('p', 's'), code: 'ComputeUnreachable' },
    { name: 'volume', call: (url: string) => new HttpVolumeClient({ url, timeoutMs: 2_000 }).detach('t', 'p', 's', 'v'), code: 'ServiceUnavailable' },
  ])('answers $code (uncertain) when the $name API does not answer', async ({ call, code }) => {
    const url = await answering(200, {});
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
    const err = await caught(call(url));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code, final: false });
    expect((err as ApiError).message).not.toContain('127.0.0.1');
  });

  it("brings a refusal back with its catalogue code, final flag and the remote request id", async () => {
    const url = await answering(409, { conflictingRequest: { code: 409, message: 'busy', error_code: 'InstanceBusy', final: false } });
    const err = await caught(new HttpComputeClient({ url, token: 't' }).checkConnect('p', 's', 'v', 'vdc'));
    expect(err).toMatchObject({ code: 'InstanceBusy', status: 409, final: false, requestId: 'req-00000000-0000-7000-8000-000000000000' });
  });

  it('resolves the endpoint at each call, so a service registered after the client was made is reached', async () => {
    const catalog = new ServiceCatalog();
    const compute = new HttpComputeClient({ url: catalog.endpoint('compute'), token: 't' });
    expect(await caught(compute.connections('p', 's'))).toMatchObject({ code: 'ServiceUnavailable' });
    catalog.register('compute', await answering(200, { connections: [{ serverId: 's', volumeId: 'v', device: 'vdb' }] }));
    expect((await compute.connections('p', 's')).value).toEqual([{ serverId: 's', volumeId: 'v', device: 'vdb' }]);
  });
});

describe('the compute client in-process (serve: the volume service calling its own compute API)', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  /** A real Fastify app answering every call to `/v2/...` as `answer` says, recording what it was sent. */
  async function inProcess(answer: (req: { method: string; url: string; headers: Record<string, unknown>; body: unknown }) => Promise<{ status: number; body: unknown }>) {
    const seen: Array<{ method: string; url: string; headers: Record<string, unknown>; body: unknown }> = [];
    app = Fastify();
    app.all('/v2/*', async (req, reply) => {
      const r = { method: req.method, url: req.url, headers: req.headers as Record<string, unknown>, body: req.body };
      seen.push(r);
      const a = await answer(r);
      return reply.status(a.status).header('x-openstack-request-id', 'req-00000000-0000-7000-8000-00000000000a').send(a.body);
    });
    const client = new HttpComputeClient({ url: 'http://127.0.0.1:8774', token: 'svc-token', timeoutMs: 200, dispatch: injectDispatch(app, () => 'http://127.0.0.1:8774') });
    return { client, seen };
  }

  it('sends the call with its token, JSON body and the API host, and answers its value and compute request id', async () => {
    const { client, seen } = await inProcess(async () => ({ status: 200, body: { volume_blockdev: { bytes: 4096 } } }));
    const r = await client.assistExtend('p', 's', 'v', 4096);
    expect(r).toEqual({ value: 4096, requestId: 'req-00000000-0000-7000-8000-00000000000a' });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ method: 'POST', url: '/v2/p/servers/s/os-online_extend_volume/v', body: { onlineExtendVolume: { bytes: 4096 } } });
    expect(seen[0]!.headers).toMatchObject({ 'x-auth-token': 'svc-token', host: '127.0.0.1:8774', 'content-type': 'application/json' });
  });

  it('brings a refusal back with its catalogue code, final flag and the remote request id, as over HTTP', async () => {
    const { client } = await inProcess(async () => ({ status: 409, body: { conflictingRequest: { code: 409, message: 'stopped', error_code: 'InstanceStopped', final: true } } }));
    const err = await caught(client.assistExtend('p', 's', 'v', 4096));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code: 'InstanceStopped', status: 409, final: true, requestId: 'req-00000000-0000-7000-8000-00000000000a' });
  });

  it.each([
    { name: 'the call outlasts its bound', stop: false, why: 'no answer within 200 ms' },
    { name: 'the app is closed', stop: true, why: 'no answer (connection failed)' },
  ])('answers ComputeUnreachable (uncertain) when $name', async ({ stop, why }) => {
    const { client } = await inProcess(async () => {
      await new Promise((r) => setTimeout(r, 1_000));
      return { status: 200, body: { volume_blockdev: { bytes: 1 } } };
    });
    if (stop) await app!.close();
    const err = await caught(client.getBlockdev('p', 's', 'v'));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code: 'ComputeUnreachable', final: false, reason: why });
  });
});
