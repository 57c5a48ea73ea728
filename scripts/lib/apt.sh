# Sourced by the install-*.sh scripts: one way to install Debian packages
# for the tests, only those missing, without starting their services.
#
#   apt_install_missing TAG package:binary...
#
# A package is installed when its binary (a command name, found in PATH,
# /usr/sbin or /usr/bin, or an absolute path) is missing. The package lists
# are refreshed only when apt does not know a package yet. Services the
# packages ship are not started during the install (policy-rc.d): the tests
# start their own instances. Needs root, or sudo. TAG prefixes the messages.

apt_have() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] ;;
    esac
}

apt_install_missing() {
    local tag=$1
    shift
    local packages=() pair p
    for pair in "$@"; do
        p="${pair%%:*}"
        if ! apt_have "${pair#*:}" && [[ " ${packages[*]} " != *" $p "* ]]; then
            packages+=("$p")
        fi
    done
    if [ "${#packages[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "$tag: run as root (or install sudo) to install: ${packages[*]}" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    local need_update=0
    for p in "${packages[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || need_update=1
    done
    if [ "$need_update" -eq 1 ]; then
        $sudo apt-get update -q
    fi
    local policy=/usr/sbin/policy-rc.d created_policy=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        created_policy=1
    fi
    $sudo apt-get install -y -q --no-install-recommends "${packages[@]}" || status=$?
    if [ "$created_policy" -eq 1 ]; then
        $sudo rm -f "$policy"
    fi
    if [ "$status" -ne 0 ]; then
        return "$status"
    fi
    echo "$tag: installed ${packages[*]}"
}
