#!/usr/bin/env bash
# Benchmark of `cfs-commit build` against `ostree commit` (Debian ostree,
# bare repository), side by side in the same run, warm page cache.
#
#   bench/commit.sh [DIR]
#
# Without DIR it generates (once) the deterministic tree of bench/image.sh:
# 60,000 files and 1 GiB under $CFS_BENCH_DIR (default /var/tmp/cfs-bench).
# Prints seconds and peak RSS for:
#   - cfs-commit build into a fresh repository             (first build)
#   - cfs-commit build of the unchanged tree, same repo    (digest cache)
#   - the same with --no-cache                              (re-read, objects exist)
#   - ostree commit into a fresh bare repository
#   - the copy floor: bench/copyfloor copying the files' bytes into new
#     files on all cores (copy_file_range) and one syncfs, the least that
#     any store keeping its own copy of the data must do on this
#     filesystem (no hashing, naming or metadata)
# and the ratios ostree / cfs first build, ostree / copy floor and rebuild
# / first build. Targets: ostree / cfs >= 5; rebuild / first < 0.05.
# RUNS=N rounds, each running every command once on fresh repositories,
# keep the best time of each. Nothing is deleted while measuring (see
# settle in bench/lib.sh): every run builds into new repositories, removed
# at the end; the disk needs about 3.3 GiB per round. FS=xfs runs it all
# on a new loop-mounted XFS with reflinks instead (see bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
command -v ostree >/dev/null || { echo "ostree not installed (apt-get install ostree)" >&2; exit 1; }
source bench/lib.sh "$@"

W=$BENCH/commit
remove "$W"
mkdir -p "$W"
bin/cfs-commit keygen "$W/key" >/dev/null
export SOURCE_DATE_EPOCH=1700000000

# timed NAME CMD...: runs CMD, keeping the best wall time and its peak RSS.
declare -A SECS RSS
timed() {
	local name=$1 t s m
	shift
	sync
	/usr/bin/time -o "$W/time" -f '%e %M' "$@" >/dev/null 2>"$W/err" || {
		echo "failed: $*" >&2
		cat "$W/err" >&2
		exit 1
	}
	t=$(tail -1 "$W/time")
	s=${t% *} m=${t#* }
	if [[ -z ${SECS[$name]:-} ]] || awk -v a="$s" -v b="${SECS[$name]}" 'BEGIN{exit !(a<b)}'; then
		SECS[$name]=$s RSS[$name]=$m
	fi
}

settle
for ((i = 0; i < RUNS; i++)); do
	R=$W/run$i
	bin/cfs-commit init --repo "$R/cfs" >/dev/null
	timed first bin/cfs-commit build --repo "$R/cfs" --ref bench/x86_64/stable --key "$W/key.key" "$TREE"
	timed rebuild bin/cfs-commit build --repo "$R/cfs" --ref bench/x86_64/stable --key "$W/key.key" "$TREE"
	timed nocache bin/cfs-commit build --repo "$R/cfs" --ref bench/x86_64/stable --key "$W/key.key" --no-cache "$TREE"
	ostree init --mode=bare --repo="$R/ostree"
	timed ostree ostree commit --repo="$R/ostree" --branch=bench/x86_64/stable --tree=dir="$TREE"
	timed floor "$TOOLS/copyfloor" "$TREE" "$R/floor"
done
remove "$W"/run*

printf '\n%-52s %8s %10s %9s\n' "command" "seconds" "files/s" "RSS MiB"
for name in floor ostree first rebuild nocache; do
	case $name in
	floor) label="copy floor: copy_file_range, all cores, syncfs" ;;
	ostree) label="ostree commit (bare repo, fresh)" ;;
	first) label="cfs-commit build (fresh repo)" ;;
	rebuild) label="cfs-commit build, unchanged tree (digest cache)" ;;
	nocache) label="cfs-commit build, unchanged tree, --no-cache" ;;
	esac
	awk -v l="$label" -v s="${SECS[$name]}" -v f="$FILES" -v r="${RSS[$name]}" \
		'BEGIN { if (s == 0) s = 0.01; printf "%-52s %8.2f %10.0f %9.1f\n", l, s, f/s, r/1024 }'
done
awk -v o="${SECS[ostree]}" -v c="${SECS[first]}" -v r="${SECS[rebuild]}" -v f="${SECS[floor]}" 'BEGIN {
	if (c == 0) c = 0.01
	if (f == 0) f = 0.01
	printf "\nostree commit / cfs-commit build:  %6.2fx  (target >= 5x: %s)\n", o/c, (o/c >= 5 ? "met" : "MISSED")
	printf "ostree commit / copy floor:        %6.2fx  (the most any tool that copies the data can reach here)\n", o/f
	printf "unchanged rebuild / first build:   %6.2f%%  (target < 5%%: %s)\n", 100*r/c, (r/c < 0.05 ? "met" : "MISSED")
}'
echo "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
