#!/usr/bin/env bash
# The built-in example: generate a small root filesystem, build its
# composefs image and object store with cfs-commit, cross-check the image
# with the reference tools, build a signed commit, deploy it with cfs-deploy,
# boot it with cfs-initramfs mount-root in a private mount namespace and list
# it, then show a tampered image refused.
set -euo pipefail
BIN=$(cd "${1:-bin}" && pwd)
WORK=${CFS_DEMO_DIR:-/var/tmp/cfs-demo}
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

echo "== generating a small root filesystem in $WORK/rootfs"
R=rootfs
mkdir -p $R/usr/bin $R/usr/lib/os-release.d $R/usr/share/doc/cfs $R/etc $R/var/lib $R/tmp
printf 'NAME="cfs demo"\nID=cfs-demo\nVERSION_ID=1\n' > $R/usr/lib/os-release
ln -s ../usr/lib/os-release $R/etc/os-release
printf '#!/bin/sh\necho "hello from a verified composefs root"\n' > $R/usr/bin/hello
chmod 0755 $R/usr/bin/hello
head -c 200000 /dev/urandom > $R/usr/bin/big-binary
for i in $(seq 1 50); do printf 'document %d\n%s\n' "$i" "$(seq 1 $i)" > $R/usr/share/doc/cfs/doc-$i.txt; done
cp $R/usr/share/doc/cfs/doc-50.txt $R/usr/share/doc/cfs/same-as-doc-50.txt
echo "localhost" > $R/etc/hostname
setfattr -n user.cfs.demo -v "an xattr" $R/usr/bin/hello 2>/dev/null || true
chmod 1777 $R/tmp
mkfifo $R/usr/share/doc/cfs/a-fifo

mkdir -p $R/usr/lib/modules/6.12.0 $R/usr/etc
head -c 300000 /dev/urandom > $R/usr/lib/modules/6.12.0/vmlinuz      # a stand-in kernel
head -c 100000 /dev/urandom > $R/usr/lib/modules/6.12.0/initramfs.img
echo "cfs-demo" > $R/usr/etc/hostname                # the default /etc ships as /usr/etc
ln -s ../usr/lib/os-release $R/usr/etc/os-release

echo "== the composefs image on its own: cfs-commit image --digest-store objects rootfs image.cfs"
"$BIN/cfs-commit" image --print-digest --digest-store=objects $R image.cfs | tee image.digest
echo "image: $(stat -c %s image.cfs) bytes; objects: $(find objects -type f | wc -l)"
echo "cross-checks: fsverity-utils says $(fsverity digest --compact image.cfs); fsck.erofs:"
fsck.erofs image.cfs

echo "== a signed commit: cfs-commit init / keygen / build"
"$BIN/cfs-commit" init --repo repo
"$BIN/cfs-commit" keygen demo
mkdir -p trusted && cp demo.pub trusted/
SOURCE_DATE_EPOCH=1700000000 "$BIN/cfs-commit" build --repo repo --ref demo/x86_64/stable --key demo.key \
	--version 1 --subject "cfs demo" $R
"$BIN/cfs-commit" verify --repo repo --trusted-keys trusted demo/x86_64/stable

echo "== deploy it: cfs-deploy init / pull / switch on a sysroot directory"
"$BIN/cfs-deploy" --sysroot sysroot init --stateroot demo --trusted-keys trusted
"$BIN/cfs-deploy" --sysroot sysroot pull repo demo/x86_64/stable
"$BIN/cfs-deploy" --sysroot sysroot switch demo/x86_64/stable
"$BIN/cfs-deploy" --sysroot sysroot status
echo "boot entry:"; cat sysroot/boot/loader/entries/*.conf

echo "== boot it as the initramfs does: cfs-initramfs mount-root with the boot entry's options"
echo "   (private mount namespace; this kernel has no fs-verity and no TPM, so the initramfs configuration"
echo "   says verity = objects, every object is hashed in user space, and tpm = off)"
mkdir -p sysroot-mnt run initramfs-etc-cfs/trusted.d
cp trusted/*.pub initramfs-etc-cfs/trusted.d/
printf 'verity = objects\ntpm = off\n' > initramfs.conf
OPTIONS=$(sed -n 's/^options //p' sysroot/boot/loader/entries/*.conf)
echo "kernel command line: $OPTIONS"
unshare -m --propagation private bash -euc '
  "$1/cfs-initramfs" mount-root --cmdline "$2" --physical-root sysroot --sysroot sysroot-mnt --run-dir run \
    --keys initramfs-etc-cfs --config initramfs.conf
  echo "--- run/cfs/booted.json:"; cat run/cfs/booted.json
  echo "--- the booted root:"
  find sysroot-mnt -printf "%M %4U %4G %8s %p\n" | sort -k5 | head -30
  echo "---"; sysroot-mnt/usr/bin/hello; cat sysroot-mnt/etc/os-release
  echo "written at boot" > sysroot-mnt/etc/demo-note   # /etc is the deployment'"'"'s writable /etc
  umount -R sysroot-mnt
' _ "$BIN" "$OPTIONS"
ls sysroot/cfs/deploy/demo/deploy/*/etc/demo-note >/dev/null
echo "/etc/demo-note persisted in the deployment: $(cat sysroot/cfs/deploy/demo/deploy/*/etc/demo-note)"

echo "== a tampered image is refused at boot (one flipped byte in image.cfs)"
IMG=$(ls sysroot/cfs/deploy/demo/deploy/*/image.cfs)
cp "$IMG" image.orig
printf '\x01' | dd of="$IMG" bs=1 seek=2000 conv=notrunc status=none
if unshare -m --propagation private "$BIN/cfs-initramfs" mount-root --cmdline "$OPTIONS" --physical-root sysroot \
	--sysroot sysroot-mnt --run-dir run --keys initramfs-etc-cfs --config initramfs.conf 2>refusal.txt; then
	echo "tampered image was NOT refused" >&2
	exit 1
fi
grep -o "image digest check failed.*(signed)" refusal.txt
cp image.orig "$IMG"
echo "== demo done: $WORK"
