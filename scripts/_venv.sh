# Sourced by the project's scripts: create (once) and activate a private
# virtual environment at $1, with an up-to-date pip.
usm_venv() {
    local venv="$1"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
    python -m pip install -q --upgrade pip
}
