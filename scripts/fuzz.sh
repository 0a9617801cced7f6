#!/usr/bin/env bash
# Runs every fuzz target of the packages given (default: all of kwatch's) for
# FUZZTIME each (default 10s), one after another. `make test` runs them
# briefly; run them longer with, e.g., FUZZTIME=10m scripts/fuzz.sh ./crash.
# A target that finds an input breaking its properties stops the script with
# go test's report; the input is kept in that package's testdata/fuzz, where
# it becomes a regression test once the parser is fixed.
set -euo pipefail

time=${FUZZTIME:-10s}
# A new input is minimized before fuzzing goes on: bounded, so that a short
# run fuzzes most of its time.
minimize=${FUZZMINIMIZETIME:-5s}
(($# > 0)) || set -- ./...
for pkg in $(go list "$@"); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $target ($pkg) for $time"
		go test -run '^$' -fuzz "^$target\$" -fuzztime "$time" -fuzzminimizetime "$minimize" "$pkg"
	done
done
