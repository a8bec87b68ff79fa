#!/usr/bin/env bash
# Start the services the full test run needs (PostgreSQL, MariaDB, RabbitMQ) when they are down,
# wait until each one answers, and make sure the `test` databases exist.
#
# Idempotent: a service that already answers is left alone. Nothing is ever stopped.
#
# Without CI=true a service that is missing or will not start only produces a warning: the
# integration tests for that backend then skip. With CI=true the same situation fails the run,
# because a skipped backend in CI would hide a broken one.
set -euo pipefail

WAIT_SECONDS="${CONVEYOR_SERVICE_WAIT_SECONDS:-60}"
PG_HOST=127.0.0.1
PG_PORT=5432
MARIADB_HOST=127.0.0.1
MARIADB_PORT=3306
TEST_DB=test

in_ci() { [ "${CI:-}" = "true" ]; }

header() { printf '\n== services: %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }

loud_warning() {
    printf '\n'
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! WARNING: %s\n' "$*" >&2
    printf '!!! Tests that need this service will be skipped (set CI=true to fail instead).\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
}

FAILURES=0

# problem MESSAGE: a service is unusable. Fatal at the end of the run under CI, a warning otherwise.
problem() {
    if in_ci; then
        printf '!!! ERROR: %s\n' "$*" >&2
        FAILURES=$((FAILURES + 1))
    else
        loud_warning "$*"
    fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# wait_until SECONDS CMD...: run CMD once a second until it succeeds or the time is up.
wait_until() {
    local seconds="$1"
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 1
    done
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

# pg_sql SQL: run SQL as a superuser, first over TCP as `postgres` (trust auth), then as the
# local `postgres` OS user over the Unix socket when running as root.
pg_sql() {
    if psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atc "$1" 2>/dev/null; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && have runuser; then
        runuser -u postgres -- psql -X -q -p "$PG_PORT" -d postgres -Atc "$1"
        return
    fi
    return 1
}

start_postgres() {
    header "PostgreSQL on ${PG_HOST}:${PG_PORT}"
    if ! have pg_isready; then
        problem "PostgreSQL client tools (pg_isready) not found; install PostgreSQL or run it in a container."
        return
    fi
    if pg_up; then
        info "already running"
    else
        if ! have pg_ctlcluster || [ ! -d /etc/postgresql ]; then
            problem "PostgreSQL is not running and no local cluster was found to start (pg_ctlcluster, /etc/postgresql)."
            return
        fi
        local version
        version="$(ls /etc/postgresql | sort -V | tail -n 1)"
        info "starting cluster ${version}/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        if ! wait_until "$WAIT_SECONDS" pg_up; then
            problem "PostgreSQL did not answer within ${WAIT_SECONDS}s."
            return
        fi
        info "started"
    fi
    if ! have psql; then
        problem "psql not found; cannot make sure the '${TEST_DB}' database exists."
        return
    fi
    local exists
    if ! exists="$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '${TEST_DB}'")"; then
        problem "cannot connect to PostgreSQL as a superuser to check the '${TEST_DB}' database."
        return
    fi
    if [ "$exists" = 1 ]; then
        info "database '${TEST_DB}' exists"
    elif pg_sql "CREATE DATABASE ${TEST_DB}"; then
        info "database '${TEST_DB}' created"
    else
        problem "could not create the PostgreSQL database '${TEST_DB}'."
    fi
}

# --- MariaDB ----------------------------------------------------------------------------------

mariadb_up() { mysqladmin -uroot -h"$MARIADB_HOST" -P"$MARIADB_PORT" ping; }

start_mariadb() {
    header "MariaDB on ${MARIADB_HOST}:${MARIADB_PORT}"
    if ! have mysqladmin; then
        problem "MariaDB client tools (mysqladmin) not found; install MariaDB or run it in a container."
        return
    fi
    if mariadb_up >/dev/null 2>&1; then
        info "already running"
    else
        if [ ! -x /usr/sbin/mariadbd ] || ! have start-stop-daemon; then
            problem "MariaDB is not running and /usr/sbin/mariadbd (or start-stop-daemon) was not found to start it."
            return
        fi
        # /run is emptied on reboot; the server needs its socket directory.
        if [ ! -d /run/mysqld ] && getent passwd mysql >/dev/null; then
            mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        fi
        info "starting /usr/sbin/mariadbd"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        if ! wait_until "$WAIT_SECONDS" mariadb_up; then
            problem "MariaDB did not answer within ${WAIT_SECONDS}s."
            return
        fi
        info "started"
    fi
    if ! have mysql; then
        problem "mysql client not found; cannot make sure the '${TEST_DB}' database exists."
        return
    fi
    if mysql -uroot -h"$MARIADB_HOST" -P"$MARIADB_PORT" \
        -e "CREATE DATABASE IF NOT EXISTS \`${TEST_DB}\`"; then
        info "database '${TEST_DB}' exists"
    else
        problem "could not create the MariaDB database '${TEST_DB}' as root without a password."
    fi
}

# --- RabbitMQ ---------------------------------------------------------------------------------

rabbitmq_up() { rabbitmq-diagnostics -q ping; }

start_rabbitmq() {
    header "RabbitMQ"
    if ! have rabbitmq-diagnostics && ! have rabbitmqctl; then
        problem "RabbitMQ (rabbitmqctl, rabbitmq-diagnostics) not found; install it or run it in a container."
        return
    fi
    if ! have rabbitmq-diagnostics; then
        rabbitmq_up() { rabbitmqctl -q status; }
    fi
    if rabbitmq_up >/dev/null 2>&1; then
        info "already running"
        return
    fi
    if ! have rabbitmq-server; then
        problem "RabbitMQ is not running and rabbitmq-server was not found to start it."
        return
    fi
    info "starting rabbitmq-server"
    rabbitmq-server -detached || true
    if have rabbitmqctl; then
        rabbitmqctl -q --timeout "$WAIT_SECONDS" await_startup >/dev/null 2>&1 || true
    fi
    if ! wait_until "$WAIT_SECONDS" rabbitmq_up; then
        problem "RabbitMQ did not answer within ${WAIT_SECONDS}s."
        return
    fi
    info "started"
}

start_postgres
start_mariadb
start_rabbitmq

if [ "$FAILURES" -gt 0 ]; then
    printf '\n== services: %d service(s) unavailable and CI=true: failing.\n' "$FAILURES" >&2
    exit 1
fi
printf '\n== services: done\n'
