#!/usr/bin/env bash
# Installs what the QEMU end-to-end tests (tests/vm, `make test-vm`) need on
# a Debian 12 machine (as root): QEMU, OVMF, the 6.12 cloud kernel (fs-verity,
# TPM drivers and file-backed EROFS built in), systemd-boot, dracut, the ESP
# tools, swtpm and e2fsprogs (mkfs.ext4 -O verity, debugfs). Idempotent and
# quiet when everything is already there. scripts/install-deps.sh installs the
# rest (Go modules, the reference tools of the unit tests).
set -euo pipefail

PKGS=(
	qemu-system-x86      # qemu-system-x86_64 (always -accel tcg here)
	ovmf                 # /usr/share/OVMF/OVMF_CODE_4M.fd, OVMF_VARS_4M.fd
	linux-image-6.12-cloud-amd64
	systemd-boot-efi     # /usr/lib/systemd/boot/efi/systemd-bootx64.efi
	systemd-boot         # systemd-bless-boot
	dracut-core          # dracut (the plain "dracut" package would also take over the host's initramfs hooks)
	dosfstools           # mkfs.vfat for the ESP
	mtools               # mmd/mcopy/mdir/mren: the ESP without mounting it
	e2fsprogs            # mkfs.ext4 -O verity, debugfs
	swtpm swtpm-tools    # the vTPM
	tpm2-tools
	cpio xz-utils zstd   # initramfs archives, compressed kernel modules
	kmod                 # depmod for the guest's module tree
)

# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install vm-deps "${PKGS[@]}"

# The kernel the guests boot: the newest installed 6.12 cloud kernel.
kver=$(cd /lib/modules && ls -d 6.12.*-cloud-amd64 2>/dev/null | sort -V | tail -n1)
if [[ -z $kver || ! -r /boot/vmlinuz-$kver ]]; then
	echo "vm-deps: no 6.12 cloud kernel in /boot and /lib/modules after installing linux-image-6.12-cloud-amd64" >&2
	exit 1
fi
