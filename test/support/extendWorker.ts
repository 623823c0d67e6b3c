/**
 * An extend workflow worker in a process of its own, for the kill -9 takeover test
 * (test/volume/workflow.leases.test.ts). Run with `node --import tsx extendWorker.ts '<json>'`,
 * the JSON being WorkerArgs. It resumes (claims) the extends it may drive on the database, then
 * prints `ready`; it prints `extend <volumeId>` for every storage extend it makes.
 */
import pino from 'pino';
import { SqliteStore } from '../../src/db/sqlite.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { ExtendWorkflow } from '../../src/volume/extend/workflow.js';
import { BlockOverFile } from './blockOverFile.js';

/** What the test hands the worker: the database file, the storage dir, compute and the timings. */
export interface WorkerArgs {
  db: string;
  volumesDir: string;
  computeUrl: string;
  token: string;
  owner: string;
  leaseMs: number;
  stepDelayMs: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const store = new SqliteStore(args.db);
const backend = new BlockOverFile(args.volumesDir, (volumeId) => console.log(`extend ${volumeId}`));
const workflow = new ExtendWorkflow({
  store,
  backends: new Map([['block', backend]]),
  compute: new HttpComputeClient({ url: args.computeUrl, token: args.token }),
  logger: pino({ level: 'silent' }),
  owner: args.owner,
  options: { timeoutMs: 30_000, pollBaseMs: 5, backoffBaseMs: 10, backoffMaxMs: 50, watchdogMs: 50, leaseMs: args.leaseMs, stepDelayMs: args.stepDelayMs },
});
await workflow.resumeAll();
console.log('ready');
