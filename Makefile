# cfs — verified, content-addressed OS images on composefs.
# `make demo` and `make test` install what they need (Debian packages, Go modules).

export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BINDIR   ?= bin
PREFIX   ?= /usr
DESTDIR  ?=
GOTESTFLAGS ?=

CMDS := cfs-commit cfs-deploy mount.cfs

.PHONY: all deps build demo test test-short vet fmt-check bench install clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@mkdir -p $(BINDIR)
	$(GO) build -trimpath -o $(BINDIR)/ $(addprefix ./cmd/,$(CMDS))

# Builds an image from a small generated root filesystem, fills an object
# store, mounts it (in a private mount namespace) and lists it.
demo: build
	@bash scripts/demo.sh $(BINDIR)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# The whole test suite. Under CI=true every root- or tool-gated test that
# cannot run is a failure, not a skip.
test: deps fmt-check vet
	$(GO) test -count=1 $(GOTESTFLAGS) ./...

test-short:
	$(GO) test -count=1 -short ./...

bench: build
	@bash bench/image.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin
	install -m 0755 $(BINDIR)/cfs-commit $(BINDIR)/cfs-deploy $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BINDIR)/mount.cfs $(DESTDIR)/sbin/mount.cfs
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0644 systemd/*.service $(DESTDIR)$(PREFIX)/lib/systemd/system/

clean:
	rm -rf $(BINDIR)
