/**
 * Every API of `serve` answers a request whose headers never finish with a 408 at its header
 * deadline (config httpHeadersTimeoutMs), within a quarter of it: the identity API included (Node
 * checks deadlines every 30 s unless told otherwise). Real service (fake driver), raw sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeService, type ServiceHarness } from '../support/service.js';
import { rawRequest } from '../support/rawHttp.js';

const DEADLINE_MS = 600;
let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService({ config: { httpHeadersTimeoutMs: DEADLINE_MS } });
});
afterAll(async () => h.cleanup());

describe('the header deadline on every API', () => {
  it.each(['computeUrl', 'volumeUrl', 'imageUrl', 'identityUrl'] as const)('%s answers 408 to half-sent headers within the deadline and a quarter', async (which) => {
    const port = Number(new URL(h.service[which]!).port);
    const res = await rawRequest(port, 'GET /v3 HTTP/1.1\r\nHost: x\r\n', { timeoutMs: 10_000 });
    expect(res.status).toBe(408);
    expect(res.elapsedMs).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
    expect(res.elapsedMs).toBeLessThan(DEADLINE_MS * 1.25 + 400);
  });
});
