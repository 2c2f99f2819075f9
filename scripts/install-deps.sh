#!/usr/bin/env bash
# Installs what cfs needs to build, run its demo and run its tests on a fresh
# Debian 12 machine (as root): the Debian packages of the reference tools the
# tests cross-check against, and the Go modules. Idempotent and quiet when
# everything is already there.
set -euo pipefail

# dracut-core is Debian's dracut (dracut, lsinitrd and the modules) without
# the "dracut" package, which conflicts with initramfs-tools: installing it
# neither removes initramfs-tools nor adds a kernel hook, so the host's own
# initramfs images are left alone. The tests build initramfs images with it,
# and lint the dracut module with shellcheck.
PKGS=(erofs-utils fsverity attr acl util-linux mount e2fsprogs swtpm swtpm-tools tpm2-tools ostree systemd
	dracut-core shellcheck xfsprogs)

# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install install-deps "${PKGS[@]}"

# Go: the machine's own toolchain (Debian's golang is too old for go.mod).
export PATH=/usr/local/go/bin:$PATH
if ! command -v go >/dev/null; then
	echo "install-deps: Go 1.26 not found (expected at /usr/local/go/bin/go)" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
go mod download
