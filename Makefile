# kwatch: `make demo` runs kwatch on the printerfact-c example in a QEMU guest;
# `make test` installs what the tests need and runs them all.
export PATH := /usr/local/go/bin:$(PATH)

KERNEL ?= $(shell ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)

.PHONY: build setup demo test test-short bench vet clean

# -buildvcs=auto: kwatch --version names the commit even where GOFLAGS says -buildvcs=false.
build:
	go build -buildvcs=auto -o kwatch .

setup:
	scripts/setup.sh

demo: setup build
	./kwatch --vm qemu --kernel $(KERNEL) --accel tcg --run 'cat /dev/printerfact' examples/printerfact-c

# The Rust e2e tests need the Rust-enabled kernel: built once, then cached.
test: setup
	tree=$$(scripts/rust-kernel.sh) && KWATCH_RUST_KERNEL=$$tree go test -count=1 -timeout 60m ./...
	scripts/fuzz.sh

test-short:
	go test -short -count=1 ./...

# One run, one TCG guest at a time: every part on the oldest installed Debian kernel
# series, the C-module parts on each newer one, hello-rust on the cached Rust kernel;
# prints the table, writes bench/results.md. `make bench KERNEL=IMAGE` runs on IMAGE alone.
bench: setup
	tree=$$(scripts/rust-kernel.sh) && go run ./bench $(if $(filter command line environment,$(origin KERNEL)),-kernel $(KERNEL)) -rust-kernel $$tree $(BENCHFLAGS)

vet:
	gofmt -l . | tee /dev/stderr | (! read -r _)
	go vet ./...

clean:
	rm -f kwatch
