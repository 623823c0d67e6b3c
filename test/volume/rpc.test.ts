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
