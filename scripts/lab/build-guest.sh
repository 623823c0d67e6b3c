#!/bin/sh
# Build (once) the lab's test guest: Debian's kernel as an uncompressed ELF vmlinux (boots ~3 s
# faster under TCG than vmlinuz) plus a busybox-static initramfs whose /init reports the size of
# every disk on ttyS0, serves a command shell on ttyS1 and runs the QEMU guest agent (qemu-ga) on
# the virtio-serial port org.qemu.guest_agent.0.
#
# Usage: build-guest.sh CACHE_DIR [RESULT_FILE]
# Prints (and writes to RESULT_FILE if given): KVER VMLINUX INITRAMFS
# Concurrent builds into one cache are serialised with flock on CACHE_DIR/.lock.
# Layout: CACHE_DIR/<kver>/{vmlinux,modules/*.ko,busybox}, CACHE_DIR/<kver>/initramfs-<hash>.cpio,
# CACHE_DIR/tools-<hash>/ (the guest's userland tools and the shared libraries they load).
# A kernel already extracted is reused (modules added to the lists below are extracted into it
# without touching what is there: other labs may be booting from it); the initramfs is rebuilt
# only when init, this script or the module lists change (its name carries their hash).
set -eu

CACHE=${1:?usage: build-guest.sh CACHE_DIR [RESULT_FILE]}
RESULT=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
INIT_SRC="$HERE/guest-init.sh"
SELF="$HERE/build-guest.sh"

# Kernel modules in load order (dependencies read with `strings X.ko | grep ^depends=`), loaded
# by /init before it reports ready: virtio disks, virtio-scsi, the agent's virtio-serial port
# (virtio_console) and ext2/3/4 (ext4 with jbd2, mbcache, crc16; crc32c for metadata checksums:
# no modprobe in the guest to load it on demand).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
crct10dif_common crct10dif_generic crc-t10dif crc64 crc64_rocksoft_generic crc64-rocksoft t10-pi
scsi_common scsi_mod sd_mod virtio_scsi virtio_console crc16 crc32c_generic mbcache jbd2 ext4"
# Loaded by /init in the background after it reports ready (xfs.ko is 4 MB: loading it would
# slow every boot under TCG for the few tests that use XFS).
LATE_MODULES="libcrc32c xfs"

# The guest's tools, from Debian packages (apt-get download + dpkg-deb -x), with the shared
# libraries ldd resolves for them (from these packages first, else the host's: both Debian 12).
TOOL_PKGS="qemu-guest-agent e2fsprogs libext2fs2 libcom-err2 libss2 fdisk libfdisk1 util-linux
libsmartcols1 libblkid1 libuuid1 libmount1 xfsprogs libinih1 liburcu8 libglib2.0-0 libpcre2-8-0
libnuma1 liburing2 libudev1 libselinux1 libffi8 zlib1g libreadline8 libtinfo6"
# Paths inside those packages, installed at the same path in the guest. mkfs.ext4 & co. are
# links to mke2fs (it reads the type from its name).
TOOL_BINS="usr/sbin/qemu-ga sbin/mke2fs sbin/resize2fs sbin/e2fsck sbin/dumpe2fs sbin/sfdisk
usr/bin/partx sbin/mkfs.xfs usr/sbin/xfs_growfs"
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

missing_modules() {
  for m in $MODULES $LATE_MODULES; do [ -s "$KDIR/modules/$m.ko" ] || echo "$m"; done
}

if [ ! -s "$KDIR/vmlinux" ] || [ ! -s "$KDIR/busybox" ] || [ ! -f "$KDIR/.complete" ] || [ -n "$(missing_modules)" ]; then
  WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
  chmod 755 "$WORK"  # apt-get download runs as _apt
  trap 'rm -rf "$WORK"' EXIT
  (cd "$WORK" && apt-get download "linux-image-$KVER" busybox-static >&2)
  KDEB=$(ls "$WORK"/linux-image-*.deb)
  BDEB=$(ls "$WORK"/busybox-static_*.deb)
  mkdir -p "$WORK/k" "$WORK/b" "$WORK/out/modules"
  FULL=1
  if [ -s "$KDIR/vmlinux" ] && [ -s "$KDIR/busybox" ] && [ -f "$KDIR/.complete" ]; then FULL=0; fi
  if [ "$FULL" = 1 ]; then WANT="$MODULES $LATE_MODULES"; else WANT=$(missing_modules); fi
  log "extracting from kernel $KVER into $KDIR: $(echo "$WANT" | tr '\n' ' ')$([ "$FULL" = 1 ] && echo '+ vmlinux')"
  MODPATHS=""
  LIST=$(dpkg-deb -c "$KDEB" | awk '{print $6}')
  for m in $WANT; do
    p=$(echo "$LIST" | grep -E "/$m\.ko$" | head -n1)
    [ -n "$p" ] || { log "module $m not found in $KDEB"; exit 1; }
    MODPATHS="$MODPATHS $p"
  done
  VMLINUZ_PATH=""
  [ "$FULL" = 1 ] && VMLINUZ_PATH="./boot/vmlinuz-$KVER"
  # shellcheck disable=SC2086
  dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$WORK/k" $VMLINUZ_PATH $MODPATHS
  for m in $WANT; do
    cp "$(find "$WORK/k/lib/modules" -name "$m.ko" | head -n1)" "$WORK/out/modules/$m.ko"
  done
  if [ "$FULL" = 1 ]; then
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
    touch "$KDIR/.complete"
  else
    # Added modules only: each lands whole (mv) next to the ones in use.
    for m in $WANT; do mv "$WORK/out/modules/$m.ko" "$KDIR/modules/$m.ko"; done
  fi
  rm -rf "$WORK"
  trap - EXIT
fi

# The guest's tools and their libraries: CACHE/tools-<hash>/root, built once per package list.
THASH=$( (echo "$TOOL_PKGS"; echo "$TOOL_BINS") | sha256sum | cut -c1-12)
TOOLS="$CACHE/tools-$THASH"
if [ ! -f "$TOOLS/.complete" ]; then
  log "building guest tools into $TOOLS"
  WORK=$(mktemp -d "$CACHE/.tools.XXXXXX")
  chmod 755 "$WORK"
  trap 'rm -rf "$WORK"' EXIT
  # shellcheck disable=SC2086
  (cd "$WORK" && apt-get download $TOOL_PKGS >&2)
  mkdir -p "$WORK/x" "$WORK/root/lib/x86_64-linux-gnu" "$WORK/root/lib64"
  for d in "$WORK"/*.deb; do dpkg-deb -x "$d" "$WORK/x"; done
  LIBPATH="$WORK/x/lib/x86_64-linux-gnu:$WORK/x/usr/lib/x86_64-linux-gnu"
  for b in $TOOL_BINS; do
    [ -f "$WORK/x/$b" ] || { log "tool $b not in $TOOL_PKGS"; exit 1; }
    mkdir -p "$WORK/root/$(dirname "$b")"
    cp "$WORK/x/$b" "$WORK/root/$b"
    # Every library the loader resolves; all in /lib/x86_64-linux-gnu (one of the loader's default dirs).
    OUT=$(LD_LIBRARY_PATH="$LIBPATH" ldd "$WORK/x/$b")
    if echo "$OUT" | grep -q 'not found'; then log "$b: unresolved libraries: $(echo "$OUT" | grep 'not found')"; exit 1; fi
    for lib in $(echo "$OUT" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
      cp -L "$lib" "$WORK/root/lib/x86_64-linux-gnu/$(basename "$lib")"
    done
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$WORK/root/lib64/ld-linux-x86-64.so.2"
  for t in mkfs.ext4 mkfs.ext3 mkfs.ext2; do ln -s mke2fs "$WORK/root/sbin/$t"; done
  ln -s e2fsck "$WORK/root/sbin/fsck.ext4"
  # Remember which package versions went in (for the build log and anyone wondering).
  (cd "$WORK" && ls ./*.deb | sed 's,^\./,,') > "$WORK/root/.packages"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS"
  mv "$WORK/root" "$TOOLS/root"
  touch "$TOOLS/.complete"
  rm -rf "$WORK"
  trap - EXIT
fi

HASH=$( (cat "$INIT_SRC" "$SELF"; echo "$MODULES $LATE_MODULES"; cat "$TOOLS/root/.packages") | sha256sum | cut -c1-12)
# Not compressed: the guest's kernel gunzips a 7.7 MB initramfs in ~0.9 s under TCG (3.72 s to
# ready against 2.84 s uncompressed, medians of 5 interleaved boots); QEMU loads the 20 MB file
# into guest memory at host speed.
INITRD="$KDIR/initramfs-$HASH.cpio"
if [ ! -s "$INITRD" ]; then
  log "building initramfs $INITRD"
  ROOT=$(mktemp -d "$CACHE/.root.XXXXXX")
  trap 'rm -rf "$ROOT"' EXIT
  # The tools first: busybox --install (in /init) then leaves their names alone.
  cp -a "$TOOLS/root/." "$ROOT/"
  rm -f "$ROOT/.packages"
  mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/usr/lib" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp" "$ROOT/run" "$ROOT/var" "$ROOT/modules" "$ROOT/etc" "$ROOT/mnt"
  ln -s ../../lib/x86_64-linux-gnu "$ROOT/usr/lib/x86_64-linux-gnu"
  ln -s ../run "$ROOT/var/run"
  cp "$KDIR/busybox" "$ROOT/bin/busybox"
  ln -s busybox "$ROOT/bin/sh"
  for m in $MODULES $LATE_MODULES; do cp "$KDIR/modules/$m.ko" "$ROOT/modules/"; done
  echo "$MODULES" | tr '\n' ' ' > "$ROOT/modules/order"
  echo "$LATE_MODULES" | tr '\n' ' ' > "$ROOT/modules/late"
  cp "$INIT_SRC" "$ROOT/init"
  chmod 755 "$ROOT/init" "$ROOT/bin/busybox"
  (cd "$ROOT" && find . | sort | "$KDIR/busybox" cpio -o -H newc 2>/dev/null > "$INITRD.tmp")
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$ROOT"
  trap - EXIT
fi

echo "$KVER $KDIR/vmlinux $INITRD"
if [ -n "$RESULT" ]; then echo "$KVER $KDIR/vmlinux $INITRD" > "$RESULT"; fi
