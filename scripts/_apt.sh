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
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: installing ${missing[*]} needs root or sudo" >&2; return 1; }
        sudo=(sudo -n)  # never wait for a password nobody can type
    fi
    # A fresh machine's boot-time apt jobs often hold the dpkg lock: wait for it rather than fail.
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
    # The package lists have a lock of their own, which apt-get update does not wait for:
    # wait for that one, and fail at once on anything else.
    local attempt output
    for attempt in $(seq 60); do
        output="$("${apt[@]}" update -qq 2>&1)" && break
        if ! grep -q "Could not get lock" <<<"$output" || ((attempt == 60)); then
            echo "$output" >&2
            return 1
        fi
        echo "apt-get update: the package lists are locked (a boot-time job?); trying again in 10 s" >&2
        sleep 10
    done
    "${apt[@]}" install -y -qq "${missing[@]}" >&2
}
