#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for the test suite, then print the line to eval:
#     eval "$(.ci/start-postgres.sh)"        # sets MMGEN_TEST_PG_URL
# Installs nothing (PostgreSQL must be installed). Listens on 127.0.0.1 only, on a free port,
# with a superuser `mmgen` (password `mmgen`). Runs the server as the `postgres` user when
# called as root. Idempotent: a second call reuses the running server.
# Settings: MMGEN_CI_PG_DIR (default /tmp/mmgen-ci-postgres), MMGEN_PG_BINDIR. Stop it with:
#     .ci/start-postgres.sh --stop
set -euo pipefail

BASE=${MMGEN_CI_PG_DIR:-/tmp/mmgen-ci-postgres}
DATA=$BASE/data
ROLE=mmgen
PASSWORD=mmgen

log() { echo "start-postgres: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_bindir() {
    local dir
    for dir in "${MMGEN_PG_BINDIR:-}" \
               "$(command -v pg_config >/dev/null 2>&1 && pg_config --bindir || true)" \
               $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5nr) \
               "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"; do
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

BINDIR=$(find_bindir) || die "initdb/pg_ctl not found: install PostgreSQL (apt-get install postgresql) or set MMGEN_PG_BINDIR"

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
    command -v runuser >/dev/null 2>&1 || die "running as root but runuser is not available"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

print_export() {
    echo "export MMGEN_TEST_PG_URL=postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$1/postgres"
}

running() { [ -f "$DATA/PG_VERSION" ] && as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

if [ "${1:-}" = "--stop" ]; then
    if running; then as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
    rm -rf "$BASE"
    exit 0
fi

if running && [ -s "$BASE/port" ]; then
    port=$(cat "$BASE/port")
    if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        log "reusing the server in $BASE on port $port"
        print_export "$port"
        exit 0
    fi
fi

mkdir -p "$BASE"
chmod 700 "$BASE"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$BASE"

if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    pwfile=$BASE/pwfile
    printf '%s\n' "$PASSWORD" >"$pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$pwfile"
    log "initdb in $DATA"
    as_pg "$BINDIR/initdb" -D "$DATA" -U "$ROLE" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync >&2
    rm -f "$pwfile"
fi

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

for attempt in 1 2 3; do
    if running; then as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true; fi
    port=$(free_port)
    log "starting PostgreSQL on 127.0.0.1:$port (attempt $attempt)"
    if as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 \
        -o "-p $port -k $BASE -c listen_addresses=127.0.0.1 -F -c synchronous_commit=off" start >&2; then
        if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30; then
            echo "$port" >"$BASE/port"
            print_export "$port"
            exit 0
        fi
    fi
    tail -n 20 "$BASE/server.log" >&2 2>/dev/null || true
done
die "PostgreSQL did not start; see $BASE/server.log"
