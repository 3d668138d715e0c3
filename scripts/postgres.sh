#!/usr/bin/env bash
# A throwaway PostgreSQL server for shared tuning studies and their tests.
#
#   scripts/postgres.sh start  DATA_DIR PORT [DB_NAME]   # initdb (trust auth) if needed, start, create DB_NAME
#   scripts/postgres.sh stop   DATA_DIR [PORT]           # fast shutdown
#   scripts/postgres.sh status DATA_DIR [PORT]
#
# The server listens on 127.0.0.1:PORT only (no other address, its socket in DATA_DIR), keeps
# its cluster in DATA_DIR/pgdata and its log in DATA_DIR/postgres.log, and has the superuser
# `postgres` with trust authentication: a test fixture, never a production database. Connect with
#   postgresql+psycopg2://postgres@127.0.0.1:PORT/DB_NAME      (DB_NAME defaults to perfpred)
#
# PostgreSQL refuses to run as root: run as root, the server runs as PG_USER (default: the
# `postgres` user, created as a system user when missing) and DATA_DIR is handed to that user;
# every parent folder of DATA_DIR must be searchable by it (e.g. a folder made under /tmp).
# The binaries are looked up in PG_BIN, then `pg_config --bindir`, then the newest
# /usr/lib/postgresql/*/bin, then PATH (Debian/Ubuntu: apt-get install postgresql).
set -euo pipefail

die() { echo "postgres.sh: $1" >&2; exit "${2:-1}"; }
usage() { die "usage: postgres.sh start DATA_DIR PORT [DB_NAME] | stop DATA_DIR [PORT] | status DATA_DIR [PORT]" 2; }

[[ $# -ge 2 ]] || usage
action=$1
data_dir=$2
port=${3:-}
db_name=${4:-perfpred}
case "$action" in
    start) [[ -n "$port" ]] || usage ;;
    stop | status) ;;
    *) usage ;;
esac
if [[ -n "$port" ]] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
    die "PORT must be a number in 1..65535, but got '$port'" 2
fi
[[ "$db_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "DB_NAME must be an identifier, but got '$db_name'" 2

# ---------------------------------------------------------------------------- the binaries
find_bindir() {
    local dir
    for dir in "${PG_BIN:-}" "$(pg_config --bindir 2>/dev/null || true)"; do
        [[ -n "$dir" && -x "$dir/initdb" ]] && { echo "$dir"; return; }
    done
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        [[ -x "$dir/initdb" ]] && { echo "$dir"; return; }
    done
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
}
bindir=$(find_bindir)
[[ -n "$bindir" ]] || die "initdb not found (looked in \$PG_BIN, pg_config --bindir, /usr/lib/postgresql/*/bin, PATH); install PostgreSQL: apt-get install postgresql" 3
for tool in pg_ctl postgres pg_isready psql; do
    [[ -x "$bindir/$tool" ]] || command -v "$tool" >/dev/null 2>&1 || die "$tool not found next to $bindir/initdb" 3
done
tool() { if [[ -x "$bindir/$1" ]]; then echo "$bindir/$1"; else command -v "$1"; fi; }

# ---------------------------------------------------------------------------- who runs the server
pg_user=""
if [[ $(id -u) -eq 0 ]]; then
    pg_user=${PG_USER:-postgres}
    if ! id -u "$pg_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user" \
            || die "cannot create the system user '$pg_user' to run PostgreSQL (it refuses root)"
    fi
    command -v runuser >/dev/null 2>&1 || die "runuser not found: cannot run PostgreSQL as '$pg_user' (it refuses root)"
fi
as_user() {
    if [[ -n "$pg_user" ]]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi
}

pgdata="$data_dir/pgdata"
log_file="$data_dir/postgres.log"

running() { [[ -f "$pgdata/PG_VERSION" ]] && as_user "$(tool pg_ctl)" -D "$pgdata" status >/dev/null 2>&1; }

case "$action" in
    status)
        if running; then echo "postgres.sh: running ($pgdata)"; else echo "postgres.sh: not running ($pgdata)"; exit 1; fi
        ;;
    stop)
        if [[ ! -f "$pgdata/PG_VERSION" ]]; then
            echo "postgres.sh: no cluster in $pgdata; nothing to stop"
            exit 0
        fi
        if running; then
            as_user "$(tool pg_ctl)" -D "$pgdata" -m fast -w -t 60 stop >/dev/null \
                || die "pg_ctl stop failed; see $log_file"
            echo "postgres.sh: stopped ($pgdata)"
        else
            echo "postgres.sh: not running ($pgdata)"
        fi
        ;;
    start)
        mkdir -p "$data_dir"
        data_dir=$(cd "$data_dir" && pwd)
        pgdata="$data_dir/pgdata"
        log_file="$data_dir/postgres.log"
        if [[ -n "$pg_user" ]]; then
            chown "$pg_user" "$data_dir"
            chmod 700 "$data_dir"
            as_user test -w "$data_dir" \
                || die "user '$pg_user' cannot write $data_dir: a parent folder is not searchable by it (use a folder under /tmp)"
        fi
        if [[ ! -f "$pgdata/PG_VERSION" ]]; then
            as_user "$(tool initdb)" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 --no-locale \
                >"$data_dir/initdb.log" 2>&1 || die "initdb failed; see $data_dir/initdb.log"
            cat >>"$pgdata/postgresql.conf" <<EOF

# scripts/postgres.sh: loopback only, a private socket folder, a test-sized server
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data_dir'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        fi
        if running; then
            echo "postgres.sh: already running ($pgdata)"
        else
            if "$(tool pg_isready)" -q -h 127.0.0.1 -p "$port" >/dev/null 2>&1; then
                die "port $port on 127.0.0.1 is already served by another PostgreSQL; choose another PORT"
            fi
            # -o overrides the port a previous start wrote, so a cluster can move to a new PORT
            as_user "$(tool pg_ctl)" -D "$pgdata" -l "$log_file" -o "-p $port" -w -t 60 start >/dev/null \
                || die "pg_ctl start failed: $(tail -n 3 "$log_file" 2>/dev/null | tr '\n' ' ')"
        fi
        for _ in $(seq 1 300); do
            "$(tool pg_isready)" -q -h 127.0.0.1 -p "$port" && break
            sleep 0.1
        done
        "$(tool pg_isready)" -q -h 127.0.0.1 -p "$port" \
            || die "the server did not accept connections on 127.0.0.1:$port within 30 s; see $log_file"
        psql=("$(tool psql)" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
        if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != "1" ]]; then
            "${psql[@]}" -c "CREATE DATABASE \"$db_name\"" >/dev/null || die "cannot create database '$db_name'"
        fi
        echo "postgres.sh: ready: postgresql+psycopg2://postgres@127.0.0.1:$port/$db_name"
        ;;
esac
