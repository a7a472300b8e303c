# Sourced by scripts/test and scripts/train: installs the Debian packages BLASNet
# builds against (and any extra ones named) when they are missing.
#   ensure_packages [extra-package ...]
ensure_packages() {
    local packages=(libopenblas-dev liblapacke-dev zlib1g-dev libopenmpi-dev openmpi-bin pkg-config "$@")
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}
