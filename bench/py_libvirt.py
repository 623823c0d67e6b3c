#!/usr/bin/python3
"""Nova's call path for bench/libvirt.ts: python3-libvirt (Debian's, run with /usr/bin/python3)
on one persistent connection. Reads one JSON command per stdin line, answers one JSON line each.

  {"op": "open", "uri": URI, "uuid": UUID, "disk": "vdb"}
      -> {"ok": true, "alias": "virtio-disk1", "bytes": N}
  {"op": "nova", "bytes": N}
      Nova's own call (nova/virt/libvirt/guest.py BlockDevice.resize):
      dom.blockResize(disk, bytes, VIR_DOMAIN_BLOCK_RESIZE_BYTES)
      -> {"ok": true, "ms": total}
  {"op": "safe", "bytes": N}
      The sequence LibvirtDriver performs: live read (QMP query-block through
      libvirt_qemu.qemuMonitorCommand), refuse a shrink, blockResize, read back.
      -> {"ok": true, "ms": total, "read_ms": .., "resize_ms": .., "readback_ms": .., "before": N, "after": N}
  {"op": "quit"}
Times are measured here with time.perf_counter_ns around the libvirt calls only.
"""
import json
import sys
import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu

conn = None
dom = None
disk = None
alias = None


def live_bytes():
    reply = libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-block"}', 0)
    for e in json.loads(reply).get("return", []):
        qdev = (e.get("qdev") or "").split("/")
        if alias in qdev or e.get("device") == "drive-" + alias:
            return e["inserted"]["image"]["virtual-size"]
    raise RuntimeError("disk %s (%s) not in query-block" % (disk, alias))


def ms(t0, t1):
    return (t1 - t0) / 1e6


def handle(cmd):
    global conn, dom, disk, alias
    op = cmd["op"]
    if op == "open":
        conn = libvirt.open(cmd["uri"])
        dom = conn.lookupByUUIDString(cmd["uuid"])
        disk = cmd["disk"]
        root = ET.fromstring(dom.XMLDesc(0))
        for d in root.iter("disk"):
            t = d.find("target")
            if t is not None and t.get("dev") == disk:
                a = d.find("alias")
                alias = a.get("name") if a is not None else None
        if alias is None:
            raise RuntimeError("no alias for %s" % disk)
        return {"ok": True, "alias": alias, "bytes": live_bytes()}
    if op == "nova":
        t0 = time.perf_counter_ns()
        dom.blockResize(disk, cmd["bytes"], libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        t1 = time.perf_counter_ns()
        return {"ok": True, "ms": ms(t0, t1)}
    if op == "safe":
        want = cmd["bytes"]
        t0 = time.perf_counter_ns()
        before = live_bytes()
        t1 = time.perf_counter_ns()
        if want < before:
            return {"ok": False, "error": "shrink refused: %d < %d" % (want, before)}
        if want != before:
            dom.blockResize(disk, want, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        t2 = time.perf_counter_ns()
        after = live_bytes()
        t3 = time.perf_counter_ns()
        if after < want:
            return {"ok": False, "error": "reads %d after a resize to %d" % (after, want)}
        return {"ok": True, "ms": ms(t0, t3), "read_ms": ms(t0, t1), "resize_ms": ms(t1, t2),
                "readback_ms": ms(t2, t3), "before": before, "after": after}
    if op == "quit":
        return None
    raise ValueError("unknown op %r" % op)


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            out = handle(json.loads(line))
        except Exception as e:  # report, keep serving
            out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        if out is None:
            break
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    if conn is not None:
        conn.close()


if __name__ == "__main__":
    main()
