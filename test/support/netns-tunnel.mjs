// The in-namespace half of test/support/netns.ts's tunnel: run inside a network namespace
// (`ip netns exec NS node netns-tunnel.mjs SOCKET NS CIDR...`), it listens on a unix socket
// (reachable by path from every namespace: the filesystem is shared) and, for each connection,
// reads one header line `HOST PORT\n`, opens a TCP connection to HOST:PORT from inside NS and
// pipes the rest both ways. So the test process in the root namespace can talk to a namespaced
// service without ever sending a packet to a namespace's address itself (that packet would leave
// the machine: the root namespace has no route to the private subnet, only its default route).
//
// Before it listens it checks that it really runs in NS (its /proc/self/ns/net is the namespace
// /run/netns/NS names), and it connects only to addresses in the CIDRs given (the private subnet
// and the namespace's own loopback). It prints `READY <pid>` on stdout once listening.
import { statSync, rmSync } from 'node:fs';
import net from 'node:net';

const [socketPath, nsName, ...cidrs] = process.argv.slice(2);
if (!socketPath || !nsName || cidrs.length === 0) {
  console.error('usage: netns-tunnel.mjs SOCKET NETNS CIDR...');
  process.exit(2);
}

const self = statSync('/proc/self/ns/net');
const want = statSync(`/run/netns/${nsName}`);
if (self.ino !== want.ino || self.dev !== want.dev) {
  console.error(`netns-tunnel: not running in network namespace ${nsName}; refusing to connect anywhere`);
  process.exit(3);
}

const ipv4 = (s) => {
  const p = s.split('.').map(Number);
  if (p.length !== 4 || p.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return undefined;
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
};
const nets = cidrs.map((c) => {
  const [addr, bits] = c.split('/');
  const base = ipv4(addr ?? '');
  const n = Number(bits);
  if (base === undefined || !Number.isInteger(n) || n < 8 || n > 32) {
    console.error(`netns-tunnel: bad CIDR ${c}`);
    process.exit(2);
  }
  const mask = n === 32 ? 0xffffffff : (~(0xffffffff >>> n)) >>> 0;
  return { base: (base & mask) >>> 0, mask };
});
const allowed = (host) => {
  const a = ipv4(host);
  return a !== undefined && nets.some(({ base, mask }) => ((a & mask) >>> 0) === base);
};

rmSync(socketPath, { force: true });
const server = net.createServer((client) => {
  client.on('error', () => {});
  let head = Buffer.alloc(0);
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const nl = head.indexOf(10);
    if (nl < 0) {
      if (head.length > 256) client.destroy();
      return;
    }
    client.off('data', onData);
    client.pause();
    const [host, portText] = head.subarray(0, nl).toString('latin1').trim().split(' ');
    const rest = head.subarray(nl + 1);
    const port = Number(portText);
    if (!host || !allowed(host) || !Number.isInteger(port) || port < 1 || port > 65535) {
      console.error(`netns-tunnel: refused target ${JSON.stringify(head.subarray(0, nl).toString('latin1'))}`);
      client.destroy();
      return;
    }
    const upstream = net.connect({ host, port, noDelay: true });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    upstream.once('connect', () => {
      if (rest.length) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  };
  client.on('data', onData);
});
server.listen(socketPath, () => {
  process.stdout.write(`READY ${process.pid}\n`);
});
const stop = () => {
  server.close();
  rmSync(socketPath, { force: true });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
