/**
 * The volume service's own token refused by compute (an admin revoked it): the service gets a new
 * one and goes on, and a user never sees their request refused with a 401 that is not theirs. A
 * refusal a new token does not cure is an uncertain 503 naming the service's credential.
 * Real service (fake driver, real HTTP, the identity API's own revocation), and a real HTTP server
 * for the client's rule.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { SERVICE_TOKEN_FILE } from '../../src/db/dataDirLayout.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { ApiError } from '../../src/rpc/httpClient.js';
import { refusedUnacted } from '../../src/errors.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;

describe('a compute API that refuses the service credential (HttpComputeClient)', () => {
  let server: Server | undefined;
  const seen: string[] = [];
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    seen.length = 0;
  });

  /** How the server refuses a token other than the valid one: a 401, or a 403 with a given catalogue code. */
  const REFUSALS = {
    unauthorized: { status: 401, body: { unauthorized: { code: 401, message: 'The token is invalid or has expired.', error_code: 'Unauthorized', final: true } } },
    policy: { status: 403, body: { forbidden: { code: 403, message: "Policy doesn't allow os_compute_api:os-online-extend-volume:get_blockdev to be performed.", error_code: 'Forbidden', final: true } } },
    projectMismatch: { status: 400, body: { badRequest: { code: 400, message: "Malformed request URL: URL's project_id 'p' doesn't match Context's project_id 'service'.", error_code: 'ProjectMismatch', final: true } } },
    tooManyDisks: { status: 403, body: { forbidden: { code: 403, message: 'The maximum allowed number of disk devices (24) to attach to a single instance has been exceeded.', error_code: 'TooManyDiskDevices', final: true } } },
  } as const;

  /** A real HTTP server that accepts only `valid` as X-Auth-Token (refusing others as `refusal` says); its URL. */
  async function accepting(valid: string, refusal: keyof typeof REFUSALS = 'unauthorized'): Promise<string> {
    server = createServer((req, res) => {
      const token = String(req.headers['x-auth-token']);
      seen.push(token);
      const ok = token === valid;
      res.writeHead(ok ? 200 : REFUSALS[refusal].status, { 'content-type': 'application/json', 'x-openstack-request-id': 'req-00000000-0000-7000-8000-000000000001' });
      res.end(JSON.stringify(ok ? { volume_blockdev: { id: 'v', bytes: 42 } } : REFUSALS[refusal].body));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const a = server.address();
    if (a === null || typeof a === 'string') throw new Error('no port');
    return `http://127.0.0.1:${a.port}`;
  }

  const caught = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

  it.each(['unauthorized', 'policy', 'projectMismatch'] as const)('retries once with the renewed token and answers (refused: %s)', async (refusal) => {
    const url = await accepting('new', refusal);
    let current = 'old';
    const renewedFor: string[] = [];
    const client = new HttpComputeClient({ url, token: () => current, serviceCredential: { renew: async (refused) => (renewedFor.push(refused), (current = 'new')) } });
    await expect(client.getBlockdev('p', 's', 'v')).resolves.toMatchObject({ value: 42 });
    expect(seen).toEqual(['old', 'new']);
    expect(renewedFor).toEqual(['old']);
  });

  const RENEWALS = [
    { name: 'no new token can be had', renew: async () => undefined },
    { name: 'renewing fails', renew: async () => Promise.reject(new Error('store is down')) },
    { name: 'the new token is refused too', renew: async () => 'newer' },
  ];
  const REASONS = {
    unauthorized: "the API refused this service's own credential",
    // The API's own message names the rule that refused it (the operator's policy file or the user's roles).
    policy: "the API's policy does not allow this service's own credential (check the service user's roles and the API's policy: Policy doesn't allow os_compute_api:os-online-extend-volume:get_blockdev to be performed.)",
    projectMismatch: "the API does not take this service's own credential as a service's (its user needs the `service` role)",
  };
  it.each((['unauthorized', 'policy', 'projectMismatch'] as const).flatMap((refusal) => RENEWALS.map((r) => ({ ...r, refusal }))))(
    'answers ComputeUnreachable (503, uncertain) naming the service credential when refused ($refusal) and $name',
    async ({ renew, refusal }) => {
      const url = await accepting('never', refusal);
      const client = new HttpComputeClient({ url, token: 'old', serviceCredential: { renew } });
      const err = await caught(client.getBlockdev('p', 's', 'v'));
      expect(err).toBeInstanceOf(ApiError);
      // Refused before compute acted: what the caller reserved can be released at once (refusedUnacted).
      expect(err).toMatchObject({ code: 'ComputeUnreachable', status: 503, final: false, reason: REASONS[refusal], unacted: true });
      expect(refusedUnacted(err)).toBe(true);
      expect(seen.length).toBeLessThanOrEqual(2);
    },
  );

  it("passes a ProjectMismatch through as the caller's own when the token is not the service's (a user's client)", async () => {
    const url = await accepting('never', 'projectMismatch');
    const err = await caught(new HttpComputeClient({ url, token: 'user-token' }).getBlockdev('p', 's', 'v'));
    expect(err).toMatchObject({ code: 'ProjectMismatch', status: 400, final: true });
  });

  it('passes a 403 that is about the request (TooManyDiskDevices) through, final, asking for no new token', async () => {
    const url = await accepting('never', 'tooManyDisks');
    const renewedFor: string[] = [];
    const client = new HttpComputeClient({ url, token: 'old', serviceCredential: { renew: async (refused) => (renewedFor.push(refused), 'new') } });
    const err = await caught(client.getBlockdev('p', 's', 'v'));
    expect(err).toMatchObject({ code: 'TooManyDiskDevices', status: 403, final: true });
    expect(seen).toEqual(['old']);
    expect(renewedFor).toEqual([]);
  });

  it('answers no answer at all (nothing listens) as ComputeUnreachable that may have acted: not released at once', async () => {
    const url = await accepting('never');
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
    const err = await caught(new HttpComputeClient({ url, token: 'old', timeoutMs: 2_000 }).getBlockdev('p', 's', 'v'));
    expect(err).toMatchObject({ code: 'ComputeUnreachable', final: false, unacted: false });
    expect(refusedUnacted(err)).toBe(false);
  });

  it("passes a 401 through as the caller's own when the token is not the service's (a user's client)", async () => {
    const url = await accepting('never');
    const err = await caught(new HttpComputeClient({ url, token: 'user-token' }).getBlockdev('p', 's', 'v'));
    expect(err).toMatchObject({ code: 'Unauthorized', status: 401, final: true });
    expect(seen).toEqual(['user-token']);
  });
});

describe('serve: the volume service’s token revoked by an admin', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await makeService();
  });
  afterAll(async () => h.cleanup());

  const serviceToken = () => (JSON.parse(readFileSync(join(h.config.dataDir, SERVICE_TOKEN_FILE), 'utf8')) as { token: string }).token;

  it('gets a new token and the in-use extend succeeds; the user never sees a 401', async () => {
    const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    const revoked = serviceToken();
    const res = await fetch(`${h.service.identityUrl}/v3/auth/tokens`, { method: 'DELETE', headers: { 'x-auth-token': h.token, 'x-subject-token': revoked } });
    expect(res.status).toBe(204);

    const extend = await h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
    expect(extend.status).toBe(202);
    const end = Date.now() + 15_000;
    let v: { status: string; size_bytes: number };
    for (;;) {
      v = (await h.volume.request<{ volume: { status: string; size_bytes: number } }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
      if (v.status !== 'extending' || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
    expect(serviceToken()).not.toBe(revoked);
  });
});

describe('serve: compute refuses the volume service for good (its policy), on a detach', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await makeService();
  });
  afterAll(async () => h.cleanup());

  it('answers 503 naming the credential and puts the volume back in-use at once (no reconciler wait); a retry once mended detaches it', async () => {
    const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    expect((await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } })).status).toBe(200);
    // The operator's policy now refuses compute's volume connections to everyone, the volume service included.
    const policy = join(h.dir, 'policy.json');
    writeFileSync(policy, JSON.stringify({ 'os_compute_api:os-volume-connections': 'role:nobody' }));
    await h.stop();
    await h.start({ policyFile: policy });
    const status = async () => (await h.volume.request<{ volume: { status: string } }>('GET', `/v3/${PROJECT}/volumes/${id}`)).body.volume.status;

    const refused = await h.volume.request('DELETE', `/v3/${PROJECT}/attachments/${id}?instance_uuid=${SERVER}`).then(() => undefined, (e: unknown) => e);
    expect(refused).toMatchObject({ code: 'ComputeUnreachable', status: 503, final: false });
    // At once, not after the reconciler's pass: the detach never reached the hypervisor.
    expect(await status()).toBe('in-use');

    await h.stop();
    await h.start({});
    expect((await h.volume.request('DELETE', `/v3/${PROJECT}/attachments/${id}?instance_uuid=${SERVER}`)).status).toBe(204);
    expect(await status()).toBe('available');
  });
});
