"""Run tempest tests as `python3 -m subunit.run` does, with two gates for a watcher outside.

Tempest boots its server and extends the attached volume as soon as the server is ACTIVE, which
on a TCG guest is seconds before the guest's own init runs; its cleanup then detaches the volume
and deletes the server at once. To read the guest's own view of the online extend, the watcher
(test/support/guestWatch.ts) needs the guest up before the extend and still there after it, so:

- `VolumesClient.extend_volume` first writes OE_GATE_DIR/extend-requested and waits for
  OE_GATE_DIR/guest-ready (the watcher writes it once the guest reports the volume);
- `ServersClient.detach_volume` first waits for OE_GATE_DIR/guest-read (the watcher has read the
  guest's size after the extend).

Each wait gives up after OE_GATE_TIMEOUT seconds (default 300) and then proceeds. Only timing
changes: every request tempest makes, and every check it runs on the answers, stays its own.

Usage: OE_GATE_DIR=DIR python3 tempest_gated_run.py TEST_ID
"""
import os
import sys
import time

from subunit.run import main
from tempest.lib.services.compute import servers_client
from tempest.lib.services.volume.v3 import volumes_client

GATE = os.environ['OE_GATE_DIR']
TIMEOUT = float(os.environ.get('OE_GATE_TIMEOUT', '300'))


def _wait_for(name):
    path = os.path.join(GATE, name)
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)


_extend = volumes_client.VolumesClient.extend_volume
_detach = servers_client.ServersClient.detach_volume


def extend_volume(self, volume_id, **kwargs):
    with open(os.path.join(GATE, 'extend-requested'), 'w') as f:
        f.write(volume_id)
    _wait_for('guest-ready')
    return _extend(self, volume_id, **kwargs)


def detach_volume(self, server_id, volume_id):
    _wait_for('guest-read')
    return _detach(self, server_id, volume_id)


volumes_client.VolumesClient.extend_volume = extend_volume
servers_client.ServersClient.detach_volume = detach_volume

if __name__ == '__main__':
    main([sys.argv[0]] + sys.argv[1:])
