#!/bin/sh
# /init of the lab's test guest (busybox-static initramfs, no root disk).
# ttyS0: kernel messages, "OE-READY uptime=<s>", and one "OE-SIZES vda=<bytes> ..." line whenever any
#        disk's size changes (and once at start).
# ttyS1: a plain shell (no echo, raw tty) for commands sent by the lab (Guest.exec).
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
