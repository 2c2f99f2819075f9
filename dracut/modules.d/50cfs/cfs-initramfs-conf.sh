#!/bin/bash
# cfs-initramfs-conf.sh SYSROOT: prints the default /etc/cfs/initramfs.conf
# for the physical sysroot SYSROOT, for the dracut module "cfs" to put into the
# initramfs when the host has no /etc/cfs/initramfs.conf:
#   verity = require     the kernel enforces fs-verity (write your own file,
#                        with verity = objects, for machines without it)
#   tpm = MODE           mode of SYSROOT/cfs/tpm/config (cfs-deploy tpm
#                        enroll), if-present when the sysroot is not enrolled
#   threshold = N        threshold of SYSROOT/cfs/config (cfs-deploy init), 1
#                        when unset
# Exits non-zero, printing nothing, when a file it reads is malformed.
set -euo pipefail

if (($# != 1)); then
    echo "usage: cfs-initramfs-conf.sh SYSROOT" >&2
    exit 2
fi
sysroot=$1

mode=if-present
tpmconf=$sysroot/cfs/tpm/config
if [[ -e $tpmconf ]]; then
    mode=$(sed -n 's/^[[:space:]]*mode[[:space:]]*=[[:space:]]*\([^[:space:]]*\)[[:space:]]*$/\1/p' "$tpmconf")
    case $mode in
        required | if-present | off) ;;
        *)
            echo "cfs-initramfs-conf: $tpmconf: mode '$mode': want required, if-present or off" >&2
            exit 1
            ;;
    esac
fi

threshold=1
config=$sysroot/cfs/config
if [[ -e $config ]]; then
    # cfs/config is JSON written by cfs-deploy: {"format":1,...,"threshold":N}
    t=$(tr -d '\n' <"$config" | sed -n 's/.*"threshold"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
    if [[ -n $t ]]; then
        if ((10#$t > 64)); then
            echo "cfs-initramfs-conf: $config: threshold $t: want 1-64" >&2
            exit 1
        fi
        ((10#$t > 0)) && threshold=$((10#$t))
    fi
fi

printf '# cfs initramfs configuration, derived from the sysroot %s by the\n' "$sysroot"
printf '# dracut module cfs (write /etc/cfs/initramfs.conf to choose yourself)\n'
printf 'verity = require\n'
printf 'tpm = %s\n' "$mode"
printf 'threshold = %d\n' "$threshold"
