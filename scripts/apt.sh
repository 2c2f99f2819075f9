# shellcheck shell=bash
# Sourced by scripts/install-deps.sh and scripts/vm-deps.sh.
# apt_install WHO PKG...: installs the Debian packages among PKG that are not
# installed yet (quietly, without recommends); WHO prefixes the messages.
apt_install() {
	local who=$1 p
	shift
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "$who: need root to install: ${missing[*]}" >&2
		return 1
	fi
	echo "$who: apt-get install ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
