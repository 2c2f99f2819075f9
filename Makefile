# cfs — verified, content-addressed OS images on composefs.
# `make demo` and `make test` install what they need (Debian packages, Go modules).

export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BINDIR   ?= bin
PREFIX   ?= /usr
DESTDIR  ?=
GOTESTFLAGS ?=

CMDS := cfs-commit cfs-deploy mount.cfs cfs-initramfs

.PHONY: all deps build demo test test-short vet fmt-check bench install clean
.PHONY: test-vm demo-vm

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@mkdir -p $(BINDIR)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BINDIR)/ $(addprefix ./cmd/,$(CMDS))

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
# cannot run is a failure, not a skip. The hashing packages run a second
# time with -tags purego: the path of CPUs without the vector lanes.
test: deps fmt-check vet
	$(GO) test -count=1 $(GOTESTFLAGS) ./...
	$(GO) test -count=1 -tags purego $(GOTESTFLAGS) ./composefs/fsverity/ ./composefs/

test-short:
	$(GO) test -count=1 -short ./...

# End to end under QEMU (software emulation) with a swtpm vTPM: builds a small
# OS tree, commits and deploys it with cfs, builds its initramfs with dracut
# and the cfs dracut module, and boots it (good boot, tampering, TPM, rollback
# with OVMF + systemd-boot). Installs its Debian packages first. ~10 minutes.
test-vm: deps
	@bash scripts/vm-deps.sh
	$(GO) vet -tags vm ./tests/vm/...
	$(GO) test -count=1 -tags vm -timeout 30m -v $(GOTESTFLAGS) ./tests/vm/

# The demo OS in a VM: builds, signs and deploys it, builds its initramfs with
# dracut and the cfs module, and boots it once under QEMU with a vTPM (the
# good boot of test-vm); the guest's report is printed. Nothing touches the
# host's boot loader. ~3 minutes.
demo-vm: deps
	@bash scripts/vm-deps.sh
	$(GO) test -count=1 -tags vm -timeout 30m -run 'TestGoodBoot$$' -v ./tests/vm/

bench: build
	@bash bench/image.sh

# Where `make install` puts the systemd units and the dracut module (dracut
# only reads /usr/lib/dracut/modules.d: with another PREFIX, set DRACUTDIR).
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
DRACUTDIR      ?= $(PREFIX)/lib/dracut
INITRD_UNITS   := systemd/cfs-mount-root.service
HOST_UNITS     := $(filter-out $(INITRD_UNITS),$(wildcard systemd/*.service))

# Installs the binaries, the systemd units and the dracut module "cfs"
# (included only with add_dracutmodules+=" cfs ": see docs/initramfs.md).
# The binaries are static (CGO_ENABLED=0), as the initramfs wants. The units of the booted
# system run $(PREFIX)/bin/cfs-*; the initrd unit runs /usr/bin/cfs-initramfs,
# where the dracut module puts it in the initramfs.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(DRACUTDIR)/modules.d/50cfs
	install -m 0755 $(BINDIR)/cfs-commit $(BINDIR)/cfs-deploy $(BINDIR)/cfs-initramfs $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BINDIR)/mount.cfs $(DESTDIR)/sbin/mount.cfs
	install -m 0644 $(INITRD_UNITS) $(DESTDIR)$(SYSTEMDUNITDIR)/
	for u in $(HOST_UNITS); do \
		sed 's|/usr/bin/cfs-|$(PREFIX)/bin/cfs-|g' $$u >$(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/} || exit 1; \
	done
	install -m 0755 dracut/modules.d/50cfs/*.sh $(DESTDIR)$(DRACUTDIR)/modules.d/50cfs/
	install -m 0644 dracut/modules.d/50cfs/*.rules $(DESTDIR)$(DRACUTDIR)/modules.d/50cfs/

clean:
	rm -rf $(BINDIR)
