#!/usr/bin/env bash
# check.sh: model-check the rings' sleep/wake protocols with spin.
#
# Runs every model of ring/model (see README.md) and every bug variant:
# a model of the code as it is must have no error, a bug variant must have
# one (or the models could not tell). One line per run: verdict, states
# stored, seconds. Exit status: 0 all as expected, 1 not, 2 spin or gcc
# missing.
#
# Usage: check.sh [-quick | -all] [-keep]
#   -quick  leave out the slowest runs (the Go test's -short mode)
#   -all    add the runs too slow for every test run
#   -keep   keep the build directory (pan, trails) and print its path
#
# Environment: JOBS (parallel runs; default: the number of CPUs, at most 4:
# a run takes up to about 3 GB, pan's limit is 6 GB).

set -u

level=1
keep=0
for arg in "$@"; do
	case $arg in
	-quick) level=0 ;;
	-all) level=2 ;;
	-keep) keep=1 ;;
	*)
		echo "usage: $0 [-quick | -all] [-keep]" >&2
		exit 2
		;;
	esac
done

for tool in spin gcc; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "check.sh: $tool not installed (apt-get install spin gcc)" >&2
		exit 2
	fi
done

dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringmodel.XXXXXX") || exit 2
if [ "$keep" = 1 ]; then
	echo "build directory: $tmp"
else
	trap 'rm -rf "$tmp"' EXIT
fi
trap 'exit 1' INT TERM

jobs=${JOBS:-$(nproc 2>/dev/null || echo 1)}
if [ "$jobs" -gt 4 ]; then
	jobs=4
fi

# name | model | spin -D flags | pan compile flags | expect | tier
#   expect: pass (no error), bug (spin must find an error)
#   tier: quick (always), default (not with -quick), all (only with -all)
# The slowest runs come first so that two lanes finish together.
runs='
mpmc-full-ring|mpmc.pml|-DK=1 -DS=1 -DCAS_GIVES_UP|-DCOLLAPSE|pass|default
mpmc-idle-producer|mpmc.pml|-DK0=2 -DK1=3 -DS=2 -DIDLE_PRODUCER -DCONS_SPIN|-DCOLLAPSE|pass|default
mpmc-bug-stale-bit|mpmc.pml|-DK0=2 -DK1=3 -DS=2 -DIDLE_PRODUCER -DCONS_SPIN -DBUG_STALE_BIT|-DCOLLAPSE -DREVERSE|bug|default
mpmc-k2-spinning-consumers|mpmc.pml|-DK=2 -DS=2 -DCONS_SPIN|-DCOLLAPSE|pass|all
mpmc-ids|mpmc.pml|-DK=1 -DS=2 -DIDS -DCAS_GIVES_UP|-DCOLLAPSE|pass|all
mpmc-spinning-producers|mpmc.pml|-DK=1 -DS=2 -DPROD_SPIN|-DCOLLAPSE|pass|all
mpmc|mpmc.pml|-DK=1 -DS=2 -DCAS_GIVES_UP||pass|quick
mpmc-bug-pending-order|mpmc.pml|-DK=1 -DS=2 -DBUG_PENDING_ORDER|-DCOLLAPSE -DREVERSE|bug|quick
mpmc-bug-close-pending|mpmc.pml|-DK0=0 -DK1=1 -DS=2 -DBUG_CLOSE_PENDING|-DREVERSE|bug|quick
spsc-pclose|spsc.pml|-DC=1 -DK=2 -DPCLOSE|-O0|pass|quick
spsc-cclose|spsc.pml|-DC=1 -DK=2 -DCCLOSE|-O0|pass|quick
spsc|spsc.pml||-O0|pass|quick
spsc-1slot|spsc.pml|-DC=1|-O0|pass|quick
spsc-bug-wake-before-store|spsc.pml|-DBUG_WAKE_BEFORE_STORE|-O0|bug|quick
spsc-bug-check-before-announce|spsc.pml|-DBUG_CHECK_BEFORE_ANNOUNCE|-O0|bug|quick
spsc-bug-seq-late|spsc.pml|-DBUG_SEQ_LATE|-O0|bug|quick
spsc-bug-close-flag-first|spsc.pml|-DC=1 -DK=2 -DPCLOSE -DBUG_CLOSE_FLAG_FIRST|-O0|bug|quick
'


# one runs a model in $tmp/$name and writes its verdict line to
# $tmp/$name/verdict: "ok|FAIL <name> <what> <states> <seconds>".
one() {
	name=$1 model=$2 defs=$3 cflags=$4 expect=$5
	d=$tmp/$name
	mkdir -p "$d" || return
	cp "$dir/$model" "$d/" || return
	start=$(date +%s.%N)
	(
		cd "$d" || exit 1
		# shellcheck disable=SC2086 # defs and cflags are word lists
		spin -a $defs "$model" >spin.out 2>&1 &&
			gcc -w -O2 -DSAFETY -DMEMLIM=6144 $cflags -o pan pan.c >gcc.out 2>&1 &&
			./pan -m1000000 >pan.out 2>&1
	)
	status=$?
	secs=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
	states=$(awk '/states, stored/ {print $1; exit}' "$d/pan.out" 2>/dev/null)
	errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$d/pan.out" 2>/dev/null | head -n 1)
	what=$(grep -m 1 -E '^pan:1: |^pan: (out of memory|invalid end state)' "$d/pan.out" 2>/dev/null |
		sed -e 's/^pan:1: //' -e 's/^pan: //' | cut -c 1-90)
	incomplete=$(grep -c -E 'Search not completed|max search depth too small|out of memory' "$d/pan.out" 2>/dev/null)
	case $what in
	"assertion violated  !("*asleep*) what="lost wakeup (the Monitor's assertion)" ;;
	esac
	if [ -z "$states" ] || [ -z "$errors" ]; then
		verdict=FAIL
		what="spin, gcc or pan failed (status $status): $(tail -n 3 "$d/spin.out" "$d/gcc.out" "$d/pan.out" 2>/dev/null | tr '\n' ' ' | cut -c 1-200)"
		states=-
	elif [ "$expect" = pass ]; then
		if [ "$errors" = 0 ] && [ "$incomplete" = 0 ]; then
			verdict=ok what="no error"
		else
			verdict=FAIL
			[ "$errors" = 0 ] && what="search incomplete"
		fi
	elif [ "$errors" != 0 ]; then
		verdict=ok what="bug found: $what"
	else
		verdict=FAIL what="bug NOT found"
	fi
	printf '%-5s %-32s %10s states %6ss  %s\n' "$verdict" "$name" "$states" "$secs" "$what" >"$d/verdict"
}

t0=$(date +%s.%N)
names=
running=0
while IFS='|' read -r name model defs cflags expect tier; do
	[ -n "$name" ] || continue
	case $tier in
	quick) ;;
	default) [ "$level" -ge 1 ] || continue ;;
	*) [ "$level" -ge 2 ] || continue ;;
	esac
	names="$names $name"
	one "$name" "$model" "$defs" "$cflags" "$expect" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
done <<EOF
$runs
EOF
wait

fail=0
for name in $names; do
	if [ -f "$tmp/$name/verdict" ]; then
		line=$(cat "$tmp/$name/verdict")
	else
		line="FAIL  $name (no verdict)"
	fi
	echo "$line"
	case $line in
	FAIL*) fail=1 ;;
	esac
done
total=$(echo "$t0 $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
if [ "$fail" = 0 ]; then
	echo "check.sh: all models as expected (${total}s)"
else
	echo "check.sh: FAILED (${total}s); rerun with -keep and replay a trail with: spin -t -p [the run's -D flags] MODEL.pml" >&2
fi
exit "$fail"
