#!/usr/bin/env bash
# Runs every fuzz target of the packages given (default: all of kwatch's) for
# FUZZTIME each (default 10s; whole seconds, minutes or hours, or a count of
# runs such as 100000x), one after another. `make test` runs them briefly;
# run them longer with, e.g., FUZZTIME=10m scripts/fuzz.sh ./crash.
# A target that finds an input breaking its properties stops the script with
# go test's report; the input is kept in that package's testdata/fuzz, where
# it becomes a regression test once the parser is fixed.
set -euo pipefail

time=${FUZZTIME:-10s}
# A new input is minimized before fuzzing goes on: bounded, so that a short
# run fuzzes most of its time.
minimize=${FUZZMINIMIZETIME:-5s}
# go test's own timeout (10m by default) must outlast the fuzzing.
case $time in
*s) secs=${time%s} ;;
*m) secs=$((${time%m} * 60)) ;;
*h) secs=$((${time%h} * 3600)) ;;
*) secs=0 ;;
esac
out=$(mktemp)
trap 'rm -f "$out"' EXIT

(($# > 0)) || set -- ./...
for pkg in $(go list "$@"); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $target ($pkg) for $time"
		found="$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$target"
		inputs() { { find "$found" -type f 2>/dev/null || true; } | wc -l; } # none yet: no dir
		before=$(inputs)
		if go test -run '^$' -fuzz "^$target\$" -fuzztime "$time" -fuzzminimizetime "$minimize" \
			-timeout "$((secs + 600))s" "$pkg" 2>&1 | tee "$out"; then
			continue
		fi
		# Go 1.26's fuzzing can fail as its time ends, with no input found
		# (go.dev/issue/75804, fixed in Go 1.27): that is no finding.
		if [[ $(inputs) == "$before" ]] && grep -qx '    context deadline exceeded' "$out"; then
			echo "(no failing input: Go's fuzzing ended with its own deadline race, go.dev/issue/75804)"
			continue
		fi
		exit 1
	done
done
