#!/usr/bin/env bash
# Make sure the services the tests use are up: PostgreSQL (127.0.0.1:5432, trust auth, database
# `test`), Redis (127.0.0.1:6379, for the benchmarks; the tests start a redis-server of their own),
# Debian's docker-compose (to validate docker-compose.yml offline) and Debian's chromium (the HTML report
# is opened in it, headless: tests/test_html_report.py).
# Starts them when they are down; installs them from Debian's packages when they are missing.
set -euo pipefail

apt_updated=0
apt_install() {
    [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    for _ in $(seq 1 30); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    echo "ensure-services: $what did not come up" >&2
    return 1
}

pg_ok() { psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
    pg_ok && return 0
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "ensure-services: installing PostgreSQL" >&2
        apt_install postgresql postgresql-client
    fi
    local version
    version=$(ls /etc/postgresql | sort -n | tail -1)
    if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
        echo "ensure-services: starting PostgreSQL $version" >&2
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        wait_for "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432
    fi
    if ! pg_ok; then  # fresh install: trust local TCP connections, create the test database
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        su postgres -c "psql -Atc 'select pg_reload_conf()'" >/dev/null
        su postgres -c "psql -Atc \"select 1 from pg_database where datname='test'\"" | grep -q 1 || su postgres -c "createdb test"
        wait_for "PostgreSQL (trust auth, database test)" pg_ok
    fi
}

ensure_redis() {
    # the tests start a redis-server of their own (tests/conftest.py), so the binary must be here even when
    # another Redis answers on 6379
    command -v redis-server >/dev/null || { echo "ensure-services: installing Redis" >&2; apt_install redis-server; }
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return 0
    echo "ensure-services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for "Redis" sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
}

ensure_compose() {
    command -v docker-compose >/dev/null && return 0
    echo "ensure-services: installing docker-compose (offline validation of docker-compose.yml)" >&2
    apt_install docker-compose
}

ensure_chromium() {  # playwright drives this build; it never downloads a browser of its own
    [ -x /usr/bin/chromium ] && return 0
    echo "ensure-services: installing chromium (headless browser for the HTML report test)" >&2
    apt_install chromium
}

command -v psql >/dev/null || apt_install postgresql-client
command -v redis-cli >/dev/null || apt_install redis-tools
ensure_postgres
ensure_redis
ensure_compose
ensure_chromium
echo "ensure-services: PostgreSQL, Redis, docker-compose and chromium are ready" >&2
