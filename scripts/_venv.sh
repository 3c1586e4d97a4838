# Sourced by the project's scripts: create (once) and activate a private
# virtual environment at $1, with an up-to-date pip.
usm_venv() {
    local venv="$1"
    if [ ! -x "$venv/bin/python" ]; then
        usm_ticking "creating $venv" python3 -m venv "$venv"
    fi
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
    usm_ticking "upgrading pip" python -m pip install --upgrade pip
}

# usm_ticking WHAT CMD...: runs CMD with its output in a log file and, while
# it runs, prints a line every 10 seconds: the seconds since the script
# started and the last thing pip or cargo said it was doing (Downloading X,
# Compiling pyo3 v0.30...). On failure the log's tail goes to stderr and its
# path is kept; the status is CMD's.
usm_ticking() {
    local what="$1" log pid ticks=0 doing status=0
    shift
    log="$(mktemp "${TMPDIR:-/tmp}/usm-pip.XXXXXX")"
    "$@" >"$log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' INT TERM
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        ticks=$((ticks + 1))
        if [ $((ticks % 10)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
            doing="$(grep -aoE '(Compiling|Collecting|Downloading|Building|Installing|Finished|Built|Processing) [^ ]+( v[0-9][^ ]*)?' "$log" | tail -n 1 || true)"
            echo "    ... $SECONDS s: $what: ${doing:-working}"
        fi
    done
    trap - INT TERM
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "==> $what failed after $SECONDS s; the whole log: $log" >&2
        return "$status"
    fi
    rm -f "$log"
}
