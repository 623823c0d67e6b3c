#!/bin/sh
# /init of the lab's test guest (busybox-static initramfs, no root disk).
# ttyS0: kernel messages, "OE-READY uptime=<s>", and one "OE-SIZES vda=<bytes> ..." line whenever any
#        disk's size changes (and once at start).
# ttyS1: a plain shell (no echo, raw tty) for commands sent by the lab (Guest.exec).
# qemu-ga: the QEMU guest agent on the virtio-serial port named org.qemu.guest_agent.0, when the
#        domain has that channel (started in the background; `oe-agent start|stop` in the shell).
/bin/busybox mkdir -p /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs tmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" 2>/dev/null || echo "OE-WARN insmod $m failed" > /dev/ttyS0
done
echo 7 > /proc/sys/kernel/printk
mkdir -p /run /mnt

# `oe-agent start|stop`: start qemu-ga on the agent's port (no udev here, so no
# /dev/virtio-ports/ link: the port is the /sys/class/virtio-ports/vportNpM whose name matches),
# or stop it. Tests stop it to see what a guest without an agent answers.
cat > /sbin/oe-agent <<'AGENT'
#!/bin/sh
case "$1" in
stop)
  for p in $(pidof qemu-ga); do kill "$p"; done
  exit 0 ;;
start)
  pidof qemu-ga >/dev/null && exit 0
  # The port appears a moment after virtio_console loads: look for up to 10 s.
  i=0
  while [ $i -lt 100 ]; do
    for n in /sys/class/virtio-ports/*/name; do
      [ -r "$n" ] || continue
      read name < "$n"
      if [ "$name" = org.qemu.guest_agent.0 ]; then
        d=${n%/name}
        port=/dev/${d##*/}
        [ -c "$port" ] || continue
        setsid /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run >/tmp/qemu-ga.log 2>&1 < /dev/null &
        exit 0
      fi
    done
    i=$((i + 1))
    sleep 0.1
  done
  echo "oe-agent: no virtio-serial port org.qemu.guest_agent.0" >&2
  exit 1 ;;
*) echo "usage: oe-agent start|stop" >&2; exit 2 ;;
esac
AGENT
chmod 755 /sbin/oe-agent
(
  /sbin/oe-agent start 2>/dev/null && echo "OE-AGENT started" > /dev/ttyS0
  for m in $(cat /modules/late); do insmod "/modules/$m.ko" 2>/dev/null; done
) &

# Command shell on ttyS1, restarted if it ever exits. stdin is a pipe, so sh is not interactive
# (no prompt, no line editing); the tty is raw with no echo, so only command output comes back.
(
  while :; do
    stty -F /dev/ttyS1 raw -echo 2>/dev/null
    setsid sh -c 'cat /dev/ttyS1 | sh >/dev/ttyS1 2>&1'
    sleep 0.2
  done
) &

read up _ < /proc/uptime
echo "OE-READY uptime=$up" > /dev/ttyS0

# Size reporter: builtins only in the loop (read, arithmetic, globbing), one sleep per round.
last=""
while :; do
  line=""
  for f in /sys/block/vd* /sys/block/sd*; do
    [ -e "$f/size" ] || continue
    read s < "$f/size"
    line="$line ${f##*/}=$((s * 512))"
  done
  if [ "$line" != "$last" ]; then
    echo "OE-SIZES$line" > /dev/ttyS0
    last="$line"
  fi
  sleep 0.1
done
