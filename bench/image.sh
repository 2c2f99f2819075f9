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
# and the ratio of each to the fsverity digest run, for the best and the
# median time of RUNS=N rounds (each runs every command once). The stores
# (about 1 GiB each) are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
source bench/lib.sh "$@"

# measure NAME CMD: one run of CMD; keeps the best wall time of NAME and
# the peak RSS of that run, and every time (ALL) for the median. $STORE is a
# new, empty directory for each run: nothing is deleted while measuring
# (see settle in bench/lib.sh).
declare -A SECS RSS ALL
measure() {
	local name=$1 t s m
	export STORE=$BENCH/stores/$name.$round
	if ! /usr/bin/time -o "$BENCH/time" -f '%e %M' bash -c "$2" >/dev/null 2>"$BENCH/err"; then
		cat "$BENCH/err" >&2
		exit 1
	fi
	t=$(tail -1 "$BENCH/time")
	s=${t% *} m=${t#* }
	ALL[$name]+="$s "
	if [[ -z ${SECS[$name]:-} ]] || awk -v a="$s" -v b="${SECS[$name]}" 'BEGIN{exit !(a<b)}'; then
		SECS[$name]=$s RSS[$name]=$m
	fi
}

remove "$BENCH/stores" "$BENCH/store" "$BENCH/out.cfs"
settle
# Rounds interleave the tools, so that a slow spell of this shared
# machine (load, steal time) does not fall on one tool's runs only.
for ((round = 0; round < RUNS; round++)); do
	measure fsverity "find '$TREE' -type f -print0 | xargs -0 -n 2000 fsverity digest"
	measure print-digest-only "bin/cfs-commit image --print-digest-only '$TREE'"
	measure image "bin/cfs-commit image '$TREE' '$BENCH/out.cfs'"
	measure digest-store "bin/cfs-commit image --digest-store=\"\$STORE\" '$TREE' '$BENCH/out.cfs'"
done
remove "$BENCH/stores"

# median NAME: the median time of NAME's runs.
median() {
	tr ' ' '\n' <<<"${ALL[$1]}" | grep . | sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}

printf '\n%-44s %8s %10s %8s %9s %9s %8s %9s\n' "command" "seconds" "files/s" "MB/s" "RSS MiB" "vs fsv" "median" "vs fsv"
for name in fsverity print-digest-only image digest-store; do
	s=${SECS[$name]}
	case $name in
	fsverity) label="fsverity digest (xargs -n 2000)" ;;
	print-digest-only) label="cfs-commit image --print-digest-only" ;;
	image) label="cfs-commit image TREE out.cfs" ;;
	digest-store) label="cfs-commit image --digest-store (empty store)" ;;
	esac
	awk -v l="$label" -v s="$s" -v f="$FILES" -v b="$BYTES" -v r="${RSS[$name]}" -v base="${SECS[fsverity]}" \
		-v med="$(median "$name")" -v mbase="$(median fsverity)" \
		'BEGIN { if (s == 0) s = 0.001; printf "%-44s %8.2f %10.0f %8.0f %9.1f %8.2fx %8.2f %8.2fx\n", l, s, f/s, b/s/1e6, r/1024, s/base, med, med/mbase }'
done
echo "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
