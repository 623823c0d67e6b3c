/**
 * `npm run bench` — every benchmark, one after the other (never in parallel: the libvirt one runs
 * a TCG guest), then all results:
 *   api      issue A: the HTTP API on the fake driver vs a bare Fastify route (bench/api.ts)
 *   libvirt  issue B: assist_extend on a real guest vs python3-libvirt, virsh, QMP (bench/libvirt.ts)
 *   e2e      issue C: an in-use volume extend, API call → the guest reports it, vs the bare primitives (bench/e2e.ts)
 *   inventory  issue D: get_blockdev latency on 10,000 servers x 4 volumes with the periodic inventory sync vs without (bench/inventory.ts)
 *   scale    issue G: get_blockdev through api → RabbitMQ → 50 hosts' agents (10 vs 10,000 servers, vs in process) and 1,000 concurrent in-use extends with one and two api processes, on PostgreSQL (bench/scale.ts)
 * `npm run bench -- api` (or libvirt, e2e, inventory, scale) runs one.
 */
import { API_TARGET, printApiBench, runApiBench } from './api.js';
import { libvirtTargetsMet, printLibvirtBench, runLibvirtBench } from './libvirt.js';
import { e2eTargetsMet, runE2eBench } from './e2e.js';
import { inventoryTargetsMet, printInventoryBench, runInventoryBench } from './inventory.js';
import { printScaleBench, runScaleBench, scaleTargetsMet } from './scale.js';

const args = process.argv.slice(2);
const want = (name: string): boolean => args.length === 0 || args.includes(name);
const KNOWN = ['api', 'libvirt', 'e2e', 'inventory', 'scale'];
const unknown = args.filter((a) => !KNOWN.includes(a));
if (unknown.length) {
  console.error(`unknown benchmark(s): ${unknown.join(' ')} (known: ${KNOWN.join(', ')})`);
  process.exit(2);
}

const results: Record<string, Record<string, number>> = {};
let ok = true;

if (want('api')) {
  console.error('running the API benchmark (fake driver)…');
  const r = await runApiBench();
  results.api = r;
  printApiBench(r);
  if (!(r.get_blockdev_vs_bare! >= API_TARGET)) ok = false;
}

if (want('inventory')) {
  console.error('running the inventory benchmark (fake driver, 10,000 servers)…');
  const r = await runInventoryBench();
  results.inventory = r;
  printInventoryBench(r);
  if (!inventoryTargetsMet(r)) ok = false;
}

if (want('scale')) {
  console.error('running the scale benchmark (fake-driver hosts, RabbitMQ, PostgreSQL)…');
  const r = await runScaleBench();
  results.scale = r;
  printScaleBench(r);
  if (!scaleTargetsMet(r)) ok = false;
}

if (want('libvirt')) {
  console.error('running the libvirt benchmark (lab guest)…');
  const r = await runLibvirtBench();
  results.libvirt = r;
  printLibvirtBench(r);
  if (!libvirtTargetsMet(r)) ok = false;
}

if (want('e2e')) {
  console.error('running the end-to-end volume extend benchmark (lab guest)…');
  const r = await runE2eBench();
  results.e2e = r;
  if (!e2eTargetsMet(r)) ok = false;
}

console.log(`\nall results (JSON):\n${JSON.stringify(results, null, 2)}`);
console.log(ok ? 'all targets met' : 'SOME TARGETS NOT MET');
process.exit(ok ? 0 : 1);
