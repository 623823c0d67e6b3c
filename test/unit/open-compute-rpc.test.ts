import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { openComputeRpc } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { isServiceError } from '../../src/errors.js';

describe("the api role's compute RPC (openComputeRpc)", () => {
  it('refuses to open without a transport URL', async () => {
    await expect(openComputeRpc(loadConfig({}, {}), pino({ level: 'silent' }))).rejects.toThrow(/transportUrl/);
  });

  it('opens over RabbitMQ at once while the broker is away, and its calls fail fast with MessagingUnavailable (503, uncertain)', async () => {
    // Port 1 on the loopback: nothing listens there, every connect is refused.
    const config = loadConfig({}, { transportUrl: 'rabbit://oe:pw@127.0.0.1:1/oe', rpcTimeoutMs: 60_000 });
    const opened = await openComputeRpc(config, pino({ level: 'silent' }));
    try {
      const t = Date.now();
      const err = await opened.rpc.getHostBytes('h1', 'server', 'volume').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isServiceError(err) && { code: err.code, status: err.status, final: err.final }).toEqual({ code: 'MessagingUnavailable', status: 503, final: false });
      // Far below the RPC deadline: the call never waited for an answer.
      expect(Date.now() - t).toBeLessThan(config.rpcTimeoutMs / 10);
    } finally {
      await opened.close();
    }
  });
});
