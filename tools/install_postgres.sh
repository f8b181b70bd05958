#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are on this machine; the
# integration tests start their own throwaway server with them (tests/pg_server.py).
# Idempotent: when the binaries are there (on PATH or in /usr/lib/postgresql/*/bin) it does
# nothing; otherwise it installs Debian's `postgresql` package. Prints one line either way.
set -euo pipefail

has_server() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

find_bindir() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
        if has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    # Debian keeps the server binaries off PATH; take the newest major version installed.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -rn); do
        if has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

fail() {
    echo "install_postgres: $*" >&2
    exit 1
}

if bindir=$(find_bindir); then
    echo "install_postgres: $("$bindir/postgres" --version) found in $bindir; nothing to do"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "PostgreSQL's server binaries are missing and apt-get is not available: install the 'postgresql' package by hand"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    fail "PostgreSQL's server binaries are missing and installing them needs root (or password-less sudo): run 'apt-get install postgresql' as root"
fi

# The tests run their own server; the package's default cluster (main, port 5432) would only be
# a second server idling on the machine, so ask Debian's postgresql-common not to create it.
"${as_root[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" \
    | "${as_root[@]}" tee /etc/postgresql-common/createcluster.d/ecom-no-main-cluster.conf >/dev/null

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
    || ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends postgresql >>"$log" 2>&1; then
    fail "apt-get could not install the 'postgresql' package (last line: $(tail -n 1 "$log"))"
fi
bindir=$(find_bindir) || fail "apt-get installed 'postgresql' but initdb/pg_ctl are still not found"
echo "install_postgres: installed $("$bindir/postgres" --version) with apt-get into $bindir"
