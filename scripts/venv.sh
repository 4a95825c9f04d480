# Sourced by scripts/serve and scripts/test: makes .venv with Python 3.11+ and installs the
# project (with the extras given) when pyproject.toml changed since the last install.
ensure_venv() {
    local extras="$1" python="${PYTHON:-python3}" stamp
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "automator67 needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
        return 1
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)${extras:+-$extras}"
    if [ ! -e "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}
