# Shared by make-fixtures and check-parity (sourced, not executed).
#
# Sets PYTHON to an interpreter that has torch, torchvision, timm,
# safetensors and numpy, and SCRIPT_ARGS to the caller's remaining
# arguments.  `--python PATH` selects an existing interpreter; otherwise the
# repo-local .venv-fixtures is used, and created on first use.  The venv lives
# in the repo (git-ignored) rather than in the user's environment so the
# reference numbers come from a known, isolated set of packages.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$REPO_ROOT/.venv-fixtures"
PYTHON=""
SCRIPT_ARGS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python)
            [[ $# -ge 2 ]] || { echo "error: --python needs a path" >&2; exit 2; }
            PYTHON="$2"; shift 2 ;;
        --python=*)
            PYTHON="${1#--python=}"; shift ;;
        *)
            SCRIPT_ARGS+=("$1"); shift ;;
    esac
done

USER_PYTHON="$PYTHON"
PACKAGES_IMPORT="import torch, torchvision, timm, safetensors, numpy"
if [[ -z "$PYTHON" ]]; then
    PYTHON="$VENV_DIR/bin/python"
    # Made in place (a venv's scripts hold its path, so one built aside and renamed has a
    # broken bin/pip) and marked once pip has finished: an interrupted install is made
    # again, a finished one is kept even if an import fails (that error is shown below).
    if [[ ! -f "$VENV_DIR/.installed" ]]; then
        if ! "$PYTHON" -c "$PACKAGES_IMPORT" 2>/dev/null; then
            echo "creating $VENV_DIR (downloads torch from PyPI)" >&2
            source "$REPO_ROOT/scripts/_apt.sh"
            ensure_packages python3-venv
            rm -rf "$VENV_DIR"
            python3 -m venv "$VENV_DIR"
            "$PYTHON" -m pip install torch torchvision timm safetensors numpy >&2
        fi
        touch "$VENV_DIR/.installed"
    fi
fi

# Fail early with a clear message rather than later with an ImportError traceback.
if ! import_error="$("$PYTHON" -c "$PACKAGES_IMPORT" 2>&1)"; then
    echo "$import_error" | tail -3 >&2
    echo "error: $PYTHON cannot import torch/torchvision/timm/safetensors/numpy" >&2
    if [[ -z "$USER_PYTHON" ]]; then
        echo "       (delete $VENV_DIR to make it again, or pass --python PATH)" >&2
    fi
    exit 2
fi
