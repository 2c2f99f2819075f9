# shellcheck shell=bash
# Shared set-up of the benchmark scripts (sourced, from the repository root):
# builds cfs-commit and the tree generator, and sets TREE, FILES and BYTES
# for the directory given as $1 or the generated 60,000-file, 1 GiB tree
# (made once under $CFS_BENCH_DIR, default /var/tmp/cfs-bench), with the
# page cache warmed.
export PATH=/usr/local/go/bin:$PATH
BENCH=${CFS_BENCH_DIR:-/var/tmp/cfs-bench}
mkdir -p "$BENCH" bin
command -v /usr/bin/time >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
go build -o bin/ ./cmd/cfs-commit
go build -o "$BENCH/gentree" ./bench/gentree
go build -o "$BENCH/copyfloor" ./bench/copyfloor
TOOLS=$BENCH # gentree and copyfloor (BENCH moves with FS=xfs)

TREE=${1:-}
if [[ -z $TREE ]]; then
	TREE=$BENCH/tree
	if [[ ! -f $BENCH/tree.done ]]; then
		echo "generating $TREE (60,000 files, 1 GiB)..." >&2
		rm -rf "$TREE"
		"$TOOLS/gentree" -files 60000 -bytes $((1 << 30)) "$TREE"
		touch "$BENCH/tree.done"
	fi
fi

# FS=xfs runs the benchmark on a new XFS with reflinks (loop device with
# direct I/O, so that the page cache is not doubled) instead of the
# filesystem of $CFS_BENCH_DIR: the tree is copied onto it and the
# repositories and stores are made there, so that objects can be clones
# of the source files. Unmounted and deleted on exit.
FSNAME=$(findmnt -n -o FSTYPE -T "$BENCH")
if [[ ${FS:-} == xfs ]]; then
	command -v mkfs.xfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null
	XFS_IMG=$BENCH/xfs.img XFS_MNT=$BENCH/xfs
	rm -f "$XFS_IMG"
	truncate -s 64G "$XFS_IMG" # sparse
	mkfs.xfs -q -f -m reflink=1 "$XFS_IMG"
	XFS_LOOP=$(losetup --find --show --direct-io=on "$XFS_IMG")
	mkdir -p "$XFS_MNT"
	mount "$XFS_LOOP" "$XFS_MNT"
	trap 'umount "$XFS_MNT"; losetup -d "$XFS_LOOP"; rm -f "$XFS_IMG"' EXIT
	echo "copying $TREE onto a new XFS (reflink=1) at $XFS_MNT..." >&2
	cp -a "$TREE" "$XFS_MNT/tree"
	sync
	TREE=$XFS_MNT/tree BENCH=$XFS_MNT FSNAME="xfs (reflink=1, loop device)"
fi
FILES=$(find "$TREE" -type f | wc -l)
BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
find "$TREE" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
echo "tree: $TREE on $FSNAME, $FILES files, $((BYTES / 1048576)) MiB, $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

# remove DIR...: deletes the directories (if any exist), syncs, and notes
# the time for settle.
remove() {
	local d any=""
	for d in "$@"; do [[ -e $d ]] && any=1; done
	[[ -n $any ]] || return 0
	rm -rf "$@"
	sync
	date +%s >"$BENCH/removed.stamp"
}

# settle waits until the inodes freed by remove are more than a minute
# old. ext4 without a journal (this project's machines) does not reuse an
# inode freed in the last 60 s (300 s while the inode table is unsynced)
# and skips such inodes one at a time on every allocation
# (recently_deleted() in ext4_new_inode): right after deleting a
# repository of 50,000 files, creating files cost 90-175 us each instead
# of 35-50 us, and a third of a build's CPU time went to that scan, for
# whichever tool happened to run next. The benchmarks therefore delete
# nothing while they measure.
settle() {
	local t wait
	t=$(cat "$BENCH/removed.stamp" 2>/dev/null || echo 0)
	wait=$((t + 65 - $(date +%s)))
	if ((wait > 0)); then
		echo "waiting ${wait}s for inodes freed by the last cleanup to age (see bench/lib.sh)..." >&2
		sleep "$wait"
	fi
}
