/**
 * The demo's one way to follow an extend: poll our own view of the volume
 * (`GET /v3/{project}/volumes/{id}/os-online-extend`, which carries the extend's step; Cinder's
 * view has only the status) until it is no longer `extending`, printing each step as it starts.
 */
import type { ApiClient } from '../rpc/httpClient.js';

/** The fields of our volume view every demo part reads; a part names the extra ones it needs in `T`. */
export interface ExtendProgressView {
  status: string;
  size_bytes: number;
  extend: { step: string; error: string | null } | null;
}

/**
 * Waits (polling every 20 ms, at most `timeoutMs`, default 120 s) until volume `id` leaves
 * `extending` and answers its view then. With `out`, prints each step as it starts with the
 * seconds since `t0` (a performance.now() value). Throws when the extend ended in
 * `error_extending` (with its error) or took longer than `timeoutMs`.
 */
export async function waitForExtend<T extends ExtendProgressView = ExtendProgressView>(
  volume: ApiClient,
  project: string,
  id: string,
  opts: { out?: (s: string) => void; t0?: number; timeoutMs?: number } = {},
): Promise<T> {
  const t0 = opts.t0 ?? performance.now();
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let lastStep = '';
  for (;;) {
    const v = (await volume.request<{ volume: T }>('GET', `/v3/${project}/volumes/${id}/os-online-extend`)).body.volume;
    if (opts.out && v.extend && v.extend.step !== lastStep) {
      lastStep = v.extend.step;
      opts.out(`   ${((performance.now() - t0) / 1000).toFixed(2)}s step ${lastStep}`);
    }
    if (v.status === 'error_extending') throw new Error(`extend failed: ${v.extend?.error ?? 'no error recorded'}`);
    if (v.status !== 'extending') return v;
    if (Date.now() > deadline) throw new Error(`the extend of volume ${id} did not finish within ${opts.timeoutMs ?? 120_000} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
