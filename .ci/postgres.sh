#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests and print its URL on stdout.
# Installs the server with apt when it is missing (CI runs as root). Usage:
#   export AUTOMOE_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#   .ci/postgres.sh stop
# and, for the fault tests, stop and start the same server keeping its data:
#   .ci/postgres.sh down; .ci/postgres.sh up
set -euo pipefail

port="${AUTOMOE_PG_PORT:-54329}"
data="${AUTOMOE_PG_DATA:-/tmp/automoe-pg-$port}"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ] && ! command -v initdb >/dev/null; then
    echo "installing postgresql" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin="$(bindir)"
bin="${bin:-$(dirname "$(command -v initdb)")}"

# The server refuses to run as root: run it as the postgres user the package creates.
as_owner=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_owner=(runuser -u postgres --)
fi

server_options="-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
if [ "${1:-}" = down ]; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$data" stop -m fast >&2
    exit 0
fi
if [ "${1:-}" = up ]; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start -o "$server_options" >&2
    exit 0
fi
if [ -f "$data/postmaster.pid" ]; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$data" stop -m fast >&2 || true
fi
if [ "${1:-}" = stop ]; then
    rm -rf "$data"
    exit 0
fi
rm -rf "$data"
mkdir -p "$data"
[ "$(id -u)" = 0 ] && chown postgres "$data"
"${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
"${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start -o "$server_options" >&2
"$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres automoe_test
echo "postgresql://postgres@127.0.0.1:$port/automoe_test"
