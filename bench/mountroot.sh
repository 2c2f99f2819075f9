#!/usr/bin/env bash
# Benchmark of `cfs-initramfs mount-root` on the large bench tree: the time
# from start to mounted root (process start to exit, and the elapsed time
# mount-root logs itself), TPM off (no TPM round trips), warm page cache.
#
#   bench/mountroot.sh [DIR]
#
# DIR (default: the generated 60,000-file, 1 GiB tree of bench/lib.sh) is
# layered under a few boot files (kernel, /etc, /var) with a read-only
# overlay, committed, deployed on a sysroot directory, and booted with:
#   verity = none     the image's fs-verity digest checked in user space, the
#                     signature, the mount: what a kernel with fs-verity does,
#                     except that there the image digest is one ioctl
#   verity = objects  the same plus every referenced object hashed in user
#                     space (machines without fs-verity)
# verity = require cannot run here (no fs-verity); see the README for what
# it costs. RUNS=N (default 5) boots per mode; the best and median are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
source bench/lib.sh "$@"
go build -o bin/ ./cmd/cfs-deploy ./cmd/cfs-initramfs

W=$BENCH/mountroot
if mountpoint -q "$W/merged" 2>/dev/null; then umount "$W/merged"; fi
rm -rf "$W"
mkdir -p "$W"/{extra/usr/lib/modules/6.12.0,extra/etc,extra/usr/etc,extra/var,merged,sysroot,run,keys/trusted.d}
head -c 8000000 /dev/urandom >"$W/extra/usr/lib/modules/6.12.0/vmlinuz"
head -c 4000000 /dev/urandom >"$W/extra/usr/lib/modules/6.12.0/initramfs.img"
echo bench >"$W/extra/usr/etc/hostname"
printf 'verity = none\ntpm = off\n' >"$W/none.conf"
printf 'verity = objects\ntpm = off\n' >"$W/objects.conf"
export SOURCE_DATE_EPOCH=1700000000

unshare -m --propagation private bash -euo pipefail -c '
W=$1 TREE=$2 RUNS=$3
mount -t overlay overlay -o ro,lowerdir="$W/extra:$TREE" "$W/merged"
bin/cfs-commit init --repo "$W/repo" >/dev/null
bin/cfs-commit keygen "$W/key" >/dev/null
cp "$W/key.pub" "$W/keys/trusted.d/"
bin/cfs-commit build --repo "$W/repo" --ref bench/x86_64/stable --key "$W/key.key" "$W/merged" >/dev/null
bin/cfs-deploy --sysroot "$W/physical" init --stateroot bench --trusted-keys "$W/keys/trusted.d" >/dev/null
bin/cfs-deploy --sysroot "$W/physical" pull "$W/repo" bench/x86_64/stable >/dev/null
bin/cfs-deploy --sysroot "$W/physical" switch bench/x86_64/stable >/dev/null
opts=$(sed -n "s/^options //p" "$W"/physical/boot/loader/entries/*.conf)
img=$(ls "$W"/physical/cfs/deploy/bench/deploy/*/image.cfs)
echo "image: $(stat -c %s "$img") bytes, objects: $(bin/cfs-commit objects "$img" | wc -l)"
find "$W/physical/cfs/repo/objects" -type f -print0 | xargs -0 cat >/dev/null
printf "%-16s %10s %10s\n" "verity" "best s" "median s"
for mode in none objects; do
	times=()
	for ((i = 0; i < RUNS; i++)); do
		rm -rf "$W/run"; mkdir -p "$W/run"
		s=$(date +%s.%N)
		bin/cfs-initramfs mount-root --cmdline "$opts" --physical-root "$W/physical" --sysroot "$W/sysroot" \
			--run-dir "$W/run" --keys "$W/keys" --config "$W/$mode.conf" 2>"$W/log" >/dev/null
		e=$(date +%s.%N)
		times+=("$(awk -v s="$s" -v e="$e" "BEGIN{printf \"%.4f\", e - s}")")
		umount -R "$W/sysroot"
	done
	best=$(printf "%s\n" "${times[@]}" | sort -n | head -1)
	median=$(printf "%s\n" "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
	printf "%-16s %10.3f %10.3f\n" "$mode" "$best" "$median"
done
umount "$W/merged"
' _ "$W" "$TREE" "$RUNS"
