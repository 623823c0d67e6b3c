/**
 * Validation messages name what the client got wrong. For union bodies (one schema object per
 * shape: Cinder's volume actions, nullable fields, enumerations) the message comes from the
 * branch the client chose, not from the first branch Ajv tried.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
let volumeId: string;

beforeAll(async () => {
  h = await makeService();
  volumeId = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'v', size_bytes: 64 * MiB } })).body.volume.id;
});
afterAll(async () => h.cleanup());

async function refusal(client: 'volume' | 'compute', method: string, path: string, body: unknown): Promise<ApiError> {
  const err = await h[client].request(method, path, body).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  return err as ApiError;
}

const volume = async () => (await h.volume.request<{ volume: { size_bytes: number; status: string } }>('GET', `/v3/${PROJECT}/volumes/${volumeId}/os-online-extend`)).body.volume;

describe('a volume action body (a union of Cinder actions) is judged by the action the client chose', () => {
  it.each([
    { name: 'os-extend-bytes not a multiple of 512', body: { 'os-extend-bytes': { new_bytes: 2147483948 } }, message: 'Invalid input for field/attribute body.os-extend-bytes.new_bytes: must be a multiple of 512' },
    { name: 'os-extend-bytes below one sector', body: { 'os-extend-bytes': { new_bytes: 0 } }, message: 'Invalid input for field/attribute body.os-extend-bytes.new_bytes: must be >= 512' },
    { name: 'os-extend-bytes without new_bytes', body: { 'os-extend-bytes': {} }, message: "Invalid input for field/attribute body.os-extend-bytes: 'new_bytes' is a required property" },
    { name: 'os-extend-bytes not an object', body: { 'os-extend-bytes': 5 }, message: 'Invalid input for field/attribute body.os-extend-bytes: must be object' },
    { name: 'os-extend-bytes with an unknown field', body: { 'os-extend-bytes': { new_bytes: 128 * MiB, force: true } }, message: /body\.os-extend-bytes: Additional properties are not allowed \('force' was unexpected\)/ },
    { name: 'os-extend with new_size 0', body: { 'os-extend': { new_size: 0 } }, message: 'Invalid input for field/attribute body.os-extend.new_size: must be >= 1 or must be string' },
    // Cinder's volume_size takes an integer or its decimal text ("2" is accepted), nothing else.
    { name: 'os-extend with new_size as text that is no integer', body: { 'os-extend': { new_size: '2.5' } }, message: 'Invalid input for field/attribute body.os-extend.new_size: must be integer or must match pattern "^[0-9]{1,20}$"' },
    { name: 'os-extend with new_size as decimal text of 0', body: { 'os-extend': { new_size: '0' } }, message: /^Invalid input for field\/attribute os-extend\.new_size: 0 is not a size in GiB from 1 to \d+\.$/ },
    { name: 'an action plus an unknown top-level field', body: { 'os-extend-bytes': { new_bytes: 128 * MiB }, force: 1 }, message: /body: Additional properties are not allowed \('force' was unexpected\)/ },
    { name: 'no action at all', body: {}, message: "Invalid input for field/attribute body: must contain exactly one of 'os-extend', 'os-extend-bytes' (got none)" },
    { name: 'two actions at once', body: { 'os-extend': { new_size: 2 }, 'os-extend-bytes': { new_bytes: 128 * MiB } }, message: /must contain exactly one of 'os-extend', 'os-extend-bytes' \(got 'os-extend', 'os-extend-bytes'\)/ },
    { name: 'an action we do not offer', body: { 'os-reset_status': { status: 'available' } }, message: /must contain exactly one of 'os-extend', 'os-extend-bytes' \(got 'os-reset_status'\)/ },
    { name: 'a JSON array', body: [{ 'os-extend': { new_size: 2 } }], message: 'Invalid input for field/attribute body: must be object' },
  ])('$name → 400 naming it, and the volume is unchanged', async (c) => {
    const before = await volume();
    const err = await refusal('volume', 'POST', `/v3/${PROJECT}/volumes/${volumeId}/action`, c.body);
    expect(err.status).toBe(400);
    expect(err.code).toBe('InvalidInput');
    if (typeof c.message === 'string') expect(err.message).toBe(c.message);
    else expect(err.message).toMatch(c.message);
    expect(err.message).not.toMatch(/'os-extend' is a required property/);
    expect(await volume()).toEqual(before);
  });

  it('accepts the same actions when they are right (the inverse)', async () => {
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${volumeId}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
    expect((await volume()).size_bytes).toBe(128 * MiB);
  });
});

describe('other unions say what is allowed', () => {
  it('names the allowed formats of a new volume (a union of constants)', async () => {
    const err = await refusal('volume', 'POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, format: 'vmdk' } });
    expect(err.message).toBe('Invalid input for field/attribute body.volume.format: must be one of "raw", "qcow2"');
  });

  it.each([
    { device: 5, message: 'Invalid input for field/attribute body.volumeAttachment.device: must be string or must be null' },
    { device: 'sda', message: 'Invalid input for field/attribute body.volumeAttachment.device: must match pattern "^(/dev/)?vd[b-z]$" or must be null' },
  ])('names every allowed shape of a nullable attach device ($device)', async (c) => {
    const err = await refusal('compute', 'POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId, device: c.device } });
    expect(err.status).toBe(400);
    expect(err.message).toBe(c.message);
  });
});
