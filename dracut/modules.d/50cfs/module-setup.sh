#!/bin/bash
# shellcheck disable=SC2154 # dracut sets initdir, moddir, systemdsystemunitdir, ...
# dracut module "cfs": puts what the initramfs needs to verify and mount a cfs
# deployment as the root file system into the image: cfs-initramfs, the initrd
# unit cfs-mount-root.service (wanted by initrd-root-fs.target), the trusted and
# revoked commit-signing keys, the TPM enrollment, /etc/cfs/initramfs.conf and
# the kernel modules (erofs, overlay, loop, TPM drivers). See docs/initramfs.md,
# "dracut module and systemd units".
#
# Opt in with add_dracutmodules+=" cfs " in a dracut.conf.d snippet. Sources on
# the host, all dracut.conf variables (host paths; --sysroot is not handled):
#   cfs_bindir          where cfs-initramfs is taken from (default /usr/bin)
#   cfs_unitdir         where cfs-mount-root.service is taken from (default:
#                       the first of systemd's unit directories holding it)
#   cfs_sysroot         the physical sysroot whose cfs/ holds the keys and the
#                       TPM enrollment (default /, or /run/cfs/physical on a
#                       booted cfs system whose / has no cfs/)
#   cfs_trusted_dir     trusted keys, *.pub (default $cfs_sysroot/cfs/trusted.d)
#   cfs_revoked_dir     revoked keys, *.pub (default $cfs_sysroot/cfs/revoked.d)
#   cfs_tpm_enrollment  TPM enrollment (default $cfs_sysroot/cfs/tpm/enrollment.json)
#   cfs_initramfs_conf  the initramfs configuration (default
#                       /etc/cfs/initramfs.conf; when that is absent one is
#                       generated from the sysroot by cfs-initramfs-conf.sh)
# A variable that is set names a file or directory that must exist. The build
# stops (dfatal) rather than produce an initramfs that cannot verify a boot:
# no cfs-initramfs, no trusted key, tpm = required without an enrollment, or
# an initramfs.conf that cfs-initramfs would refuse at boot.

# called by dracut: include the module only when asked for or depended on.
check() {
    return 255
}

# called by dracut. cfs-initramfs talks to /dev/tpmrm0 itself (no TSS
# libraries), so tpm2-tss is not needed; systemd-initrd provides
# initrd-root-fs.target, and systemd-udevd the device units the TPM wait of
# cfs-tpm2-generator uses.
depends() {
    echo systemd systemd-initrd systemd-udevd
    return 0
}

# called by dracut (not with --no-kernel). hostonly='' includes the modules
# even when the host does not use them right now; instmods skips modules the
# kernel does not have (built in or not configured).
installkernel() {
    hostonly='' instmods erofs overlay loop
    hostonly='' instmods tpm_tis tpm_crb
}

_cfs_fatal() {
    dfatal "cfs: $*"
    exit 1
}

# _cfs_sysroot prints the physical sysroot whose cfs/ the keys come from.
_cfs_sysroot() {
    if [[ -n ${cfs_sysroot-} ]]; then
        printf '%s\n' "$cfs_sysroot"
    elif [[ ! -d /cfs && -d /run/cfs/physical/cfs ]]; then
        printf '%s\n' /run/cfs/physical
    else
        printf '%s\n' /
    fi
}

# _cfs_check_conf FILE checks a configuration as cfs-initramfs parses it (a
# typo would otherwise stop the boot) and prints its tpm mode (required when
# unset). On an error it prints the message and returns 1.
_cfs_check_conf() {
    local _line _k _v _n=0 _seen=" " _mode=required
    while IFS= read -r _line || [[ -n $_line ]]; do
        _n=$((_n + 1))
        _line=${_line#"${_line%%[![:space:]]*}"}
        [[ -z $_line || $_line == \#* ]] && continue
        if [[ $_line != *=* ]]; then
            echo "line $_n: want key = value"
            return 1
        fi
        _k=${_line%%=*} _v=${_line#*=}
        _k=${_k%"${_k##*[![:space:]]}"}
        _v=${_v#"${_v%%[![:space:]]*}"}
        _v=${_v%"${_v##*[![:space:]]}"}
        if [[ $_seen == *" $_k "* ]]; then
            echo "line $_n: $_k given twice"
            return 1
        fi
        _seen+="$_k "
        case $_k=$_v in
            verity=require | verity=objects | verity=none) ;;
            tpm=required | tpm=if-present | tpm=off) _mode=$_v ;;
            threshold=[1-9] | threshold=[1-5][0-9] | threshold=6[0-4]) ;;
            verity=* | tpm=* | threshold=*)
                case $_k in
                    verity) echo "line $_n: verity = $_v: want require, objects or none" ;;
                    tpm) echo "line $_n: tpm = $_v: want required, if-present or off" ;;
                    threshold) echo "line $_n: threshold = $_v: want 1-64" ;;
                esac
                return 1
                ;;
            *)
                echo "line $_n: unknown key $_k"
                return 1
                ;;
        esac
    done <"$1"
    echo "$_mode"
}

# _cfs_inst_keys SRC-DIR DEST-DIR installs SRC-DIR/*.pub and prints how many.
_cfs_inst_keys() {
    local _f _n=0
    for _f in "$1"/*.pub; do
        [[ -f $_f ]] || continue
        inst_simple "$_f" "$2/${_f##*/}" || _cfs_fatal "cannot install key $_f"
        _n=$((_n + 1))
    done
    printf '%s\n' "$_n"
}

# called by dracut.
install() {
    local _bindir=${cfs_bindir:-/usr/bin}
    local _sysroot _trusted _revoked _enrollment _conf _unit _d _n _mode

    [[ -x $_bindir/cfs-initramfs ]] ||
        _cfs_fatal "$_bindir/cfs-initramfs not found: install cfs (make install) or set cfs_bindir"
    inst_binary "$_bindir/cfs-initramfs" /usr/bin/cfs-initramfs ||
        _cfs_fatal "cannot install $_bindir/cfs-initramfs"

    if [[ -n ${cfs_unitdir-} ]]; then
        _unit=$cfs_unitdir/cfs-mount-root.service
    else
        for _d in "$systemdsystemunitdir" /usr/lib/systemd/system /usr/local/lib/systemd/system /etc/systemd/system; do
            _unit=$_d/cfs-mount-root.service
            [[ -f $_unit ]] && break
        done
    fi
    [[ -f $_unit ]] || _cfs_fatal "$_unit not found: install cfs (make install) or set cfs_unitdir"
    inst_simple "$_unit" "$systemdsystemunitdir/cfs-mount-root.service" ||
        _cfs_fatal "cannot install $_unit"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target cfs-mount-root.service ||
        _cfs_fatal "cannot add cfs-mount-root.service to initrd-root-fs.target"

    # Waiting for the TPM device on systemd without tpm2.target.
    inst_simple "$moddir/60-cfs-tpm.rules" "$udevrulesdir/60-cfs-tpm.rules" ||
        _cfs_fatal "cannot install 60-cfs-tpm.rules"
    inst_script "$moddir/cfs-tpm2-generator.sh" "$systemdutildir/system-generators/cfs-tpm2-generator" ||
        _cfs_fatal "cannot install cfs-tpm2-generator"

    _sysroot=$(_cfs_sysroot)
    _trusted=${cfs_trusted_dir:-$_sysroot/cfs/trusted.d}
    _revoked=${cfs_revoked_dir:-$_sysroot/cfs/revoked.d}
    _enrollment=${cfs_tpm_enrollment:-$_sysroot/cfs/tpm/enrollment.json}

    [[ -d $_trusted ]] ||
        _cfs_fatal "no trusted keys: $_trusted is not a directory (set cfs_sysroot or cfs_trusted_dir); an initramfs that cannot verify a boot is not built"
    _n=$(_cfs_inst_keys "$_trusted" /etc/cfs/trusted.d) || exit 1
    ((_n > 0)) ||
        _cfs_fatal "no trusted keys: no *.pub in $_trusted; an initramfs that cannot verify a boot is not built"
    dinfo "cfs: $_n trusted key(s) from $_trusted"

    if [[ -n ${cfs_revoked_dir-} && ! -d $cfs_revoked_dir ]]; then
        _cfs_fatal "cfs_revoked_dir=$cfs_revoked_dir is not a directory"
    fi
    if [[ -d $_revoked ]]; then
        _n=$(_cfs_inst_keys "$_revoked" /etc/cfs/revoked.d) || exit 1
        dinfo "cfs: $_n revoked key(s) from $_revoked"
    fi

    if [[ -n ${cfs_initramfs_conf-} && ! -f $cfs_initramfs_conf ]]; then
        _cfs_fatal "cfs_initramfs_conf=$cfs_initramfs_conf not found"
    fi
    _conf=${cfs_initramfs_conf:-/etc/cfs/initramfs.conf}
    if [[ -f $_conf ]]; then
        inst_simple "$_conf" /etc/cfs/initramfs.conf || _cfs_fatal "cannot install $_conf"
    else
        mkdir -p "$initdir/etc/cfs"
        bash "$moddir/cfs-initramfs-conf.sh" "$_sysroot" >"$initdir/etc/cfs/initramfs.conf" ||
            _cfs_fatal "cannot derive /etc/cfs/initramfs.conf from $_sysroot (write $_conf or set cfs_initramfs_conf)"
        _conf="the configuration derived from $_sysroot"
    fi
    _mode=$(_cfs_check_conf "$initdir/etc/cfs/initramfs.conf") || _cfs_fatal "$_conf: $_mode"
    dinfo "cfs: /etc/cfs/initramfs.conf: $_conf (tpm = $_mode)"

    if [[ -n ${cfs_tpm_enrollment-} && ! -f $cfs_tpm_enrollment ]]; then
        _cfs_fatal "cfs_tpm_enrollment=$cfs_tpm_enrollment not found"
    fi
    if [[ -f $_enrollment ]]; then
        inst_simple "$_enrollment" /etc/cfs/tpm/enrollment.json || _cfs_fatal "cannot install $_enrollment"
    elif [[ $_mode == required ]]; then
        _cfs_fatal "tpm = required (in $_conf) but there is no TPM enrollment at $_enrollment: enroll with cfs-deploy tpm enroll, set cfs_tpm_enrollment, or set tpm = if-present"
    fi
}
