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

TREE=${1:-}
if [[ -z $TREE ]]; then
	TREE=$BENCH/tree
	if [[ ! -f $BENCH/tree.done ]]; then
		echo "generating $TREE (60,000 files, 1 GiB)..." >&2
		rm -rf "$TREE"
		"$BENCH/gentree" -files 60000 -bytes $((1 << 30)) "$TREE"
		touch "$BENCH/tree.done"
	fi
fi
FILES=$(find "$TREE" -type f | wc -l)
BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
find "$TREE" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
echo "tree: $TREE, $FILES files, $((BYTES / 1048576)) MiB, $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
