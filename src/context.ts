import type { RequestTimings } from './util/timing.js';

/** Who is calling and under which request id; passed from the API into every service call. */
export interface RequestContext {
  requestId: string;
  userId: string;
  projectId: string;
  roles: readonly string[];
  /**
   * The request's Server-Timing parts, when the API records them (serverTimingDetail): a service
   * makes them current (util/timing.ts withTimings) around the store, RPC, lock and driver calls it
   * makes for the request, so those layers add their time. Absent: nothing is recorded.
   */
  timings?: RequestTimings | undefined;
}
