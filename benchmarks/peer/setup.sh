#!/bin/bash
# Installs what the side-by-side benchmark needs to run the real PanDA server, once, into a cache
# directory (nothing of it goes into the repository):
#   - Debian packages: apache2, its mod_wsgi for Debian's Python 3, apache2-dev (the server's
#     pip dependency mod_wsgi compiles against apxs), python3-venv, pg_partman, acl;
#   - a virtualenv on Debian's /usr/bin/python3.11 (Apache's daemons run as www-data and must be
#     able to run that Python) with panda-server from PyPI and psycopg2-binary;
#   - pg_partman for the PostgreSQL on 127.0.0.1:5432 (the schema partitions tables with it);
#   - the panda-database repository (the server's PostgreSQL schema), cloned once or copied from
#     a local checkout given with --panda-database (or PANDA_DATABASE_SRC).
#
#   benchmarks/peer/setup.sh [--panda-database PATH] [--version 1.0.4]
#
# The cache is $PANDAWMS_CACHE/peer, or ~/.cache/pandawms/peer. Each step leaves a marker file and
# is skipped when its marker is there, so a second run does nothing.
set -euo pipefail

VERSION=${PANDA_SERVER_VERSION:-1.0.4}
SRC=${PANDA_DATABASE_SRC:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --panda-database) SRC=$2; shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

CACHE=${PANDAWMS_CACHE:-$HOME/.cache/pandawms}/peer
PY=/usr/bin/python3.11
mkdir -p "$CACHE"
log() { echo "peer setup: $*" >&2; }

# 1. Debian packages (root only; a non-root user must have them installed already).
# pg_partman for the running PostgreSQL's major version (15 on Debian 12).
PGMAJOR=$(psql -X -h "${PGHOST:-127.0.0.1}" -U postgres -tAc "SELECT current_setting('server_version_num')::int / 10000" 2>/dev/null || echo 15)
need=()
for pkg in apache2 apache2-dev libapache2-mod-wsgi-py3 python3-venv "postgresql-$PGMAJOR-partman" acl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        log "missing Debian packages: ${need[*]} (install them as root)"; exit 1
    fi
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. The server's virtualenv. The sdist's build hook changes the owner of the log directories it
# makes to atlpan:zp when it runs with a real group id of 0 and fails when those do not exist;
# building the wheel with a non-zero real group id makes it keep the current user.
VENV=$CACHE/venv-$VERSION
if [ ! -f "$VENV/.complete" ]; then
    log "installing panda-server $VERSION into $VENV (a few minutes)"
    rm -rf "$VENV" "$CACHE/wheels"
    mkdir -p "$CACHE/wheels"
    "$PY" -m venv "$VENV"
    (cd "$CACHE/wheels" && setpriv --rgid 1 --egid 1 --clear-groups \
        "$VENV/bin/pip" wheel -q --no-deps "panda-server==$VERSION" -w "$CACHE/wheels")
    "$VENV/bin/pip" install -q "$CACHE"/wheels/panda_server-"$VERSION"-*.whl psycopg2-binary
    touch "$VENV/.complete"
fi

# 3. The schema repository.
DB=$CACHE/panda-database
if [ ! -f "$DB/schema/postgres/version" ]; then
    rm -rf "$DB"
    if [ -n "$SRC" ] && [ -d "$SRC/schema/postgres" ]; then
        log "copying the panda-database checkout $SRC"
        cp -r "$SRC" "$DB"
    elif [ -n "$SRC" ] && git --git-dir "$SRC" rev-parse HEAD >/dev/null 2>&1; then
        log "exporting the panda-database git directory $SRC"
        mkdir -p "$DB"
        git --git-dir "$SRC" archive HEAD | tar -x -C "$DB"
    elif [ -n "$SRC" ]; then
        log "$SRC is neither a panda-database checkout nor its git directory"; exit 1
    elif ! timeout 120 git clone -q --depth 1 https://github.com/PanDAWMS/panda-database "$DB" 2>/dev/null; then
        rm -rf "$DB"
        log "could not clone the panda-database repository (no network?): give a local checkout"
        log "or git directory with --panda-database PATH or PANDA_DATABASE_SRC"
        exit 1
    fi
fi

# 4. Apache's daemons run as www-data: they must reach the virtualenv and the run directory.
# When the cache lies under a home directory they cannot enter (root's), give www-data the right
# to pass through (x, not read) each directory above it, and nothing else.
path=
for part in $(echo "$CACHE" | tr / ' '); do
    path=$path/$part
    if ! setpriv --reuid www-data --regid www-data --clear-groups test -x "$path" 2>/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            log "www-data cannot enter $path; choose a PANDAWMS_CACHE it can reach"; exit 1
        fi
        log "letting www-data pass through $path (setfacl u:www-data:x)"
        setfacl -m u:www-data:x "$path"
    fi
done
echo "$VENV"
