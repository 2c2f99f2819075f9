#!/usr/bin/env bash
# Installs what cfs needs to build, run its demo and run its tests on a fresh
# Debian 12 machine (as root): the Debian packages of the reference tools the
# tests cross-check against, and the Go modules. Idempotent and quiet when
# everything is already there.
set -euo pipefail

# dracut-core is Debian's dracut (dracut, lsinitrd and the modules) without
# the "dracut" package, which conflicts with initramfs-tools: installing it
# neither removes initramfs-tools nor adds a kernel hook, so the host's own
# initramfs images are left alone. The tests build initramfs images with it;
# shellcheck lints the dracut module.
PKGS=(erofs-utils fsverity attr acl util-linux mount e2fsprogs swtpm swtpm-tools tpm2-tools ostree systemd
	dracut-core shellcheck)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "install-deps: apt-get install ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go: the machine's own toolchain (Debian's golang is too old for go.mod).
export PATH=/usr/local/go/bin:$PATH
if ! command -v go >/dev/null; then
	echo "install-deps: Go 1.26 not found (expected at /usr/local/go/bin/go)" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
go mod download
