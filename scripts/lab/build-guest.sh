#!/bin/sh
# Build (once) the lab's test guest: Debian's kernel as an uncompressed ELF vmlinux (boots ~3 s
# faster under TCG than vmlinuz) plus a busybox-static initramfs whose /init reports the size of
# every disk on ttyS0 and serves a command shell on ttyS1.
#
# Usage: build-guest.sh CACHE_DIR [RESULT_FILE]
# Prints (and writes to RESULT_FILE if given): KVER VMLINUX INITRAMFS
# Concurrent builds into one cache are serialised with flock on CACHE_DIR/.lock.
# Layout: CACHE_DIR/<kver>/{vmlinux,modules/*.ko,busybox}, CACHE_DIR/<kver>/initramfs-<hash>.gz
# A kernel already extracted is reused; the initramfs is rebuilt only when init or the module
# list changes (its name carries their hash).
set -eu

CACHE=${1:?usage: build-guest.sh CACHE_DIR [RESULT_FILE]}
RESULT=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
INIT_SRC="$HERE/guest-init.sh"

# Kernel modules in load order (dependencies read with `strings X.ko | grep ^depends=`).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
crct10dif_common crct10dif_generic crc-t10dif crc64 crc64_rocksoft_generic crc64-rocksoft t10-pi
scsi_common scsi_mod sd_mod virtio_scsi"

log() { echo "build-guest: $*" >&2; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
exec 9>"$CACHE/.lock"
flock 9

# Which kernel package does linux-image-amd64 point at? Fall back to whatever is cached already.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1 || true)
if [ -z "$KPKG" ]; then
  KVER=$(ls -1 "$CACHE" 2>/dev/null | grep -E '^[0-9]' | sort -V | tail -n1 || true)
  [ -n "$KVER" ] || { log "cannot resolve linux-image-amd64 (run apt-get update) and nothing cached"; exit 1; }
else
  KVER=${KPKG#linux-image-}
fi
KDIR="$CACHE/$KVER"

if [ ! -s "$KDIR/vmlinux" ] || [ ! -s "$KDIR/busybox" ] || [ ! -f "$KDIR/.complete" ]; then
  log "building kernel $KVER into $KDIR"
  WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
  chmod 755 "$WORK"  # apt-get download runs as _apt
  trap 'rm -rf "$WORK"' EXIT
  (cd "$WORK" && apt-get download "linux-image-$KVER" busybox-static >&2)
  KDEB=$(ls "$WORK"/linux-image-*.deb)
  BDEB=$(ls "$WORK"/busybox-static_*.deb)
  mkdir -p "$WORK/k" "$WORK/b" "$WORK/out/modules"
  # Only vmlinuz and the modules we load.
  MODPATHS=""
  LIST=$(dpkg-deb -c "$KDEB" | awk '{print $6}')
  for m in $MODULES; do
    p=$(echo "$LIST" | grep -E "/$m\.ko$" | head -n1)
    [ -n "$p" ] || { log "module $m not found in $KDEB"; exit 1; }
    MODPATHS="$MODPATHS $p"
  done
  # shellcheck disable=SC2086
  dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$WORK/k" "./boot/vmlinuz-$KVER" $MODPATHS
  for m in $MODULES; do
    cp "$(find "$WORK/k/lib/modules" -name "$m.ko" | head -n1)" "$WORK/out/modules/$m.ko"
  done
  # vmlinuz is a bzImage; the kernel inside is an xz stream. Decompress it to the ELF vmlinux.
  VMLINUZ="$WORK/k/boot/vmlinuz-$KVER"
  OFF=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | head -n1 | cut -d: -f1)
  [ -n "$OFF" ] || { log "no xz stream in $VMLINUZ"; exit 1; }
  tail -c +"$((OFF + 1))" "$VMLINUZ" | xz -dc --single-stream > "$WORK/out/vmlinux"
  [ "$(head -c 4 "$WORK/out/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || { log "vmlinux is not ELF"; exit 1; }
  dpkg-deb -x "$BDEB" "$WORK/b"
  cp "$WORK/b/bin/busybox" "$WORK/out/busybox"
  rm -rf "$KDIR"
  mkdir -p "$KDIR"
  mv "$WORK/out/vmlinux" "$WORK/out/busybox" "$WORK/out/modules" "$KDIR/"
  echo "$MODULES" | tr '\n' ' ' > "$KDIR/modules.order"
  touch "$KDIR/.complete"
  rm -rf "$WORK"
  trap - EXIT
fi

HASH=$( (cat "$INIT_SRC"; echo "$MODULES") | sha256sum | cut -c1-12)
INITRD="$KDIR/initramfs-$HASH.gz"
if [ ! -s "$INITRD" ]; then
  log "building initramfs $INITRD"
  ROOT=$(mktemp -d "$CACHE/.root.XXXXXX")
  trap 'rm -rf "$ROOT"' EXIT
  mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp" "$ROOT/modules" "$ROOT/etc"
  cp "$KDIR/busybox" "$ROOT/bin/busybox"
  ln -s busybox "$ROOT/bin/sh"
  cp "$KDIR"/modules/*.ko "$ROOT/modules/"
  echo "$MODULES" | tr '\n' ' ' > "$ROOT/modules/order"
  cp "$INIT_SRC" "$ROOT/init"
  chmod 755 "$ROOT/init" "$ROOT/bin/busybox"
  (cd "$ROOT" && find . | sort | "$KDIR/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$INITRD.tmp")
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$ROOT"
  trap - EXIT
fi

echo "$KVER $KDIR/vmlinux $INITRD"
if [ -n "$RESULT" ]; then echo "$KVER $KDIR/vmlinux $INITRD" > "$RESULT"; fi
