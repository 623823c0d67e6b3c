#!/bin/sh
# Start a private libvirtd for the lab without touching the host's /etc or /var.
#
# Usage: start-libvirtd.sh LAB_DIR [CAPS_CACHE_DIR]
# Inside a private mount namespace (unshare -m --propagation private), private directories under
# LAB_DIR/libvirt are bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /var/log/libvirt, and copies of /etc/passwd and /etc/group that hold the
# libvirt-qemu user/group (Debian's libvirt looks it up before reading qemu.conf) over the
# originals. libvirtd daemonizes (-d) inside that namespace; the namespace lives as long as it does.
# CAPS_CACHE_DIR (optional) is bind-mounted over /var/cache/libvirt so QEMU's capability probe
# (~4 s) is cached across labs; libvirt revalidates that cache itself.
#
# Writes LAB_DIR/libvirt/libvirtd.pid; the socket is LAB_DIR/libvirt/run/libvirt-sock.
set -eu

LAB=${1:?usage: start-libvirtd.sh LAB_DIR [CAPS_CACHE_DIR]}
CAPS=${2:-}
mkdir -p "$LAB"
LAB=$(cd "$LAB" && pwd)
L="$LAB/libvirt"
mkdir -p "$L/etc" "$L/run" "$L/lib" "$L/cache" "$L/log"
if [ -n "$CAPS" ]; then
  mkdir -p "$CAPS"
  CAPS=$(cd "$CAPS" && pwd)
else
  CAPS="$L/cache"
fi

# Host's client configs (libvirt.conf, libvirt-admin.conf) come along; ours on top.
cp -a /etc/libvirt/. "$L/etc/" 2>/dev/null || true

cat > "$L/etc/libvirtd.conf" <<CONF
# online-extend lab: private libvirtd, unix socket only, no auth (root-only directory).
unix_sock_dir = "/run/libvirt"
unix_sock_group = "root"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF

cat > "$L/etc/qemu.conf" <<CONF
# online-extend lab
user = "root"
group = "root"
stdio_handler = "file"
CONF

cp /etc/passwd "$L/passwd"
cp /etc/group "$L/group"
grep -q '^libvirt-qemu:' "$L/group" || echo 'libvirt-qemu:x:64055:' >> "$L/group"
grep -q '^kvm:' "$L/group" || echo 'kvm:x:64056:' >> "$L/group"
grep -q '^libvirt:' "$L/group" || echo 'libvirt:x:64057:' >> "$L/group"
grep -q '^libvirt-qemu:' "$L/passwd" ||
  echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin' >> "$L/passwd"

# Mount points must exist on the host (empty directories; nothing is written to them).
mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt

rm -f "$L/libvirtd.pid" "$L/run/libvirt-sock"
export L CAPS
exec unshare -m --propagation private sh -ec '
  mount --bind "$L/etc" /etc/libvirt
  mount --bind "$L/run" /run/libvirt
  mount --bind "$L/lib" /var/lib/libvirt
  mount --bind "$CAPS" /var/cache/libvirt
  mount --bind "$L/log" /var/log/libvirt
  mount --bind "$L/passwd" /etc/passwd
  mount --bind "$L/group" /etc/group
  exec libvirtd -d -p "$L/libvirtd.pid" -f /etc/libvirt/libvirtd.conf
'
