#!/usr/bin/env bash
# Benchmark of `cfs-commit image` against the reference tools, side by side
# in the same run, warm page cache.
#
#   bench/image.sh [DIR]
#
# Without DIR it generates (once) a deterministic tree of 60,000 files and
# 1 GiB under $CFS_BENCH_DIR (default /var/tmp/cfs-bench). Prints seconds,
# files/s, MB/s and peak RSS for:
#   - cfs-commit image --print-digest-only          (walk + hash + image)
#   - cfs-commit image TREE out.cfs                  (same, image written)
#   - cfs-commit image --digest-store=S TREE out.cfs (empty store filled)
#   - fsverity digest (fsverity-utils), one process per 2000 files via xargs
# and the ratio of each to the fsverity digest run. RUNS=N repeats each and
# keeps the best time. The stores (about 1 GiB each) are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
source bench/lib.sh "$@"

# run NAME CMD...: best wall time of $RUNS runs, and the peak RSS of that
# run. $STORE is a new, empty directory for each run: nothing is deleted
# while measuring (see settle in bench/lib.sh).
declare -A SECS RSS
run() {
	local name=$1 best="" rss=""
	shift
	for ((i = 0; i < RUNS; i++)); do
		export STORE=$BENCH/stores/$name.$i
		if ! /usr/bin/time -o "$BENCH/time" -f '%e %M' bash -c "$*" >/dev/null 2>"$BENCH/err"; then
			cat "$BENCH/err" >&2
			exit 1
		fi
		local t
		t=$(tail -1 "$BENCH/time")
		local s=${t% *} m=${t#* }
		if [[ -z $best ]] || awk -v a="$s" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$s rss=$m; fi
	done
	SECS[$name]=$best RSS[$name]=$rss
}

remove "$BENCH/stores" "$BENCH/store" "$BENCH/out.cfs"
settle
run fsverity "find '$TREE' -type f -print0 | xargs -0 -n 2000 fsverity digest"
run print-digest-only "bin/cfs-commit image --print-digest-only '$TREE'"
run image "bin/cfs-commit image '$TREE' '$BENCH/out.cfs'"
run digest-store "bin/cfs-commit image --digest-store=\"\$STORE\" '$TREE' '$BENCH/out.cfs'"
remove "$BENCH/stores"

printf '\n%-44s %8s %10s %8s %9s %9s\n' "command" "seconds" "files/s" "MB/s" "RSS MiB" "vs fsv"
for name in fsverity print-digest-only image digest-store; do
	s=${SECS[$name]}
	case $name in
	fsverity) label="fsverity digest (xargs -n 2000)" ;;
	print-digest-only) label="cfs-commit image --print-digest-only" ;;
	image) label="cfs-commit image TREE out.cfs" ;;
	digest-store) label="cfs-commit image --digest-store (empty store)" ;;
	esac
	awk -v l="$label" -v s="$s" -v f="$FILES" -v b="$BYTES" -v r="${RSS[$name]}" -v base="${SECS[fsverity]}" \
		'BEGIN { if (s == 0) s = 0.001; printf "%-44s %8.2f %10.0f %8.0f %9.1f %8.2fx\n", l, s, f/s, b/s/1e6, r/1024, s/base }'
done
echo "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
