# Conveyor task runner: the same recipes serve people and CI.
# Run `just --list` to see every recipe with its purpose.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
python := venv / "bin/python"
bin := venv / "bin"
peers_venv := justfile_directory() / "bench/.peers-venv"

# The conformance suite joins the lint and install steps once it has a package.
conformance_pkg := justfile_directory() / "conformance-tests/pyproject.toml"
lint_paths := if path_exists(conformance_pkg) == "true" { "python conformance-tests docs/hooks docs/tools docs/tests faults examples .ci" } else { "python docs/hooks docs/tools docs/tests faults examples .ci" }

# Backends the reference library's conformance adapter is run against (`+rabbitmq`: broker mode).
adapters := "memory sqlite postgresql mariadb postgresql+rabbitmq sqlite+rabbitmq"
# Backends whose vectors also run through the HTTP binding of `conveyor web` (spec.md#http);
# about twice a direct vector run each, so one backend by default (add postgresql at will)
http_adapters := "sqlite"
# Test processes run at once by `just unit` and `just conformance` (pytest-xdist, and backends
# side by side): every test process has tables and queues of its own (TEST_PREFIX holds its pid).
# `just unit -n 0` runs the tests in one process.
test_workers := env("CONVEYOR_TEST_WORKERS", "2")

# List the recipes
default:
    @"{{ just_executable() }}" --justfile "{{ justfile() }}" --list --unsorted

# Create .venv (if missing) and install the library, its dev tools and the conformance suite
# (and, with apt-get, Graphviz and Chromium for the docs when they are missing)
setup: system-packages
    if [ ! -x "{{ python }}" ]; then python3 -m venv "{{ venv }}"; fi
    "{{ python }}" -m pip install --quiet --upgrade pip
    # The library was distributed as `conveyor` before it took the free name `conveyor-queue`.
    if "{{ python }}" -m pip show --quiet conveyor >/dev/null 2>&1; then "{{ python }}" -m pip uninstall --quiet -y conveyor; fi
    "{{ python }}" -m pip install -c requirements/dev.lock -e "./python[dev]"
    if [ -f "{{ conformance_pkg }}" ]; then "{{ python }}" -m pip install -c requirements/dev.lock -e ./conformance-tests; fi
    # ajv for the cross-validator of `just spec-check` (spec/tools/node, pinned by its lock file)
    npm ci --prefix spec/tools/node --no-audit --no-fund --loglevel=error
    # amqplib for the Node producer example the broker tests run (spec.md#amqp)
    npm ci --prefix conformance-tests/examples/node-producer --no-audit --no-fund --loglevel=error

# Debian packages the docs and the dashboard need: Graphviz (`dot`) draws the state diagrams at
# build time; Chromium loads every page in `just docs-check` and runs the dashboard's browser
# test (playwright drives it and downloads no browser). Installed only when missing.
[private]
system-packages:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    command -v dot >/dev/null || missing+=(graphviz)
    # Any of the browsers docs/tools/check_site.py accepts will do (hosted runners have Chrome).
    if [ ! -x /usr/bin/chromium ] && [ ! -x /usr/bin/google-chrome ] && [ ! -x /usr/bin/google-chrome-stable ] && [ -z "${CONVEYOR_CHROMIUM:-}" ]; then
        missing+=(chromium fonts-liberation)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
    if ! command -v apt-get >/dev/null || { [ "${#sudo[@]}" -gt 0 ] && ! sudo -n true 2>/dev/null; }; then
        echo "setup: the docs need ${missing[*]}; install them with your package manager." >&2
        exit 0
    fi
    echo "setup: installing ${missing[*]} with apt-get"
    install=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}")
    "${sudo[@]}" "${install[@]}" >/dev/null || { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" "${install[@]}" >/dev/null; }

[private]
_ensure-setup:
    if [ ! -x "{{ bin }}/pytest" ]; then "{{ just_executable() }}" --justfile "{{ justfile() }}" setup; fi

# Run the self-contained demo (embedded SQLite, no services needed)
demo *args:
    "{{ bin }}/conveyor" demo {{ args }}

# Check the spec files for consistency, compare ajv with python-jsonschema on them, then test the
# checker itself
spec-check:
    "{{ python }}" spec/tools/spec_check.py
    if [ ! -d spec/tools/node/node_modules/ajv ]; then npm ci --prefix spec/tools/node --no-audit --no-fund --loglevel=error; fi
    "{{ python }}" spec/tools/cross_validate.py
    "{{ python }}" -m pytest -q spec/tools/tests

# Lint and check formatting (ruff); changes nothing
lint:
    "{{ bin }}/ruff" check {{ lint_paths }}
    "{{ bin }}/ruff" format --check {{ lint_paths }}
    # the benchmark scripts run only under `just bench*`: at least they must parse and name
    # nothing undefined
    "{{ bin }}/ruff" check --select E9,F bench

# Format the code and apply safe lint fixes
fmt:
    "{{ bin }}/ruff" format {{ lint_paths }}
    "{{ bin }}/ruff" check --fix {{ lint_paths }}

# Type-check the library and the fault suite with mypy --strict (python/pyproject.toml, faults/mypy.ini)
typecheck:
    cd python && "{{ bin }}/mypy"
    cd faults && "{{ bin }}/mypy"

# Run the library's tests; extra arguments go to pytest, paths relative to python/
unit *args:
    cd python && "{{ python }}" -m pytest -n "{{ test_workers }}" {{ args }}

# Workers killed, paused and cut off, a private RabbitMQ node stopped and killed, a proxy that
# partitions and slows links, poison messages and fuzzing (docs/operations/reliability.md)
# Run the fault suite (`--short`: the scenarios `just test` runs; `--list`; `--only NAME`)
[positional-arguments]
faults *args: _ensure-setup
    "{{ python }}" faults/run.py "$@"

# Start PostgreSQL, MariaDB and RabbitMQ if they are down, and wait until they answer
services:
    bash .ci/services.sh

# Run the conformance suite: its own tests, then every backend adapter of the reference library,
# then the vectors through the HTTP binding on SQLite (extra arguments go to each run, e.g.
# `just conformance --thorough`)
conformance *args:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -f "{{ conformance_pkg }}" ]; then
        echo "conformance: the conformance suite lands in a later version; nothing to run."
        exit 0
    fi
    echo "== conformance: the suite's own tests"
    (cd conformance-tests && "{{ python }}" -m pytest -q -p no:cacheprovider -n "{{ test_workers }}")
    mkdir -p reports docs/conformance/reports
    # One run per backend, {{ test_workers }} at a time (each adapter process has tables and AMQP
    # queues of its own); each run's output is kept and shown whole, in order, once all ended.
    one() {
        local name="$1"; shift
        local status=0
        "{{ bin }}/conveyor-conformance" run "$@" --report "reports/conformance-${name}.json" \
            {{ args }} || status=$?
        if [ -f "reports/conformance-${name}.json" ]; then
            "{{ bin }}/conveyor-conformance" export "reports/conformance-${name}.json" \
                --out "docs/conformance/reports/${name}.json" || status=$?
        fi
        return "${status}"
    }
    names=()
    pids=()
    start() {
        local name="$1"; shift
        while [ "$(jobs -rp | wc -l)" -ge "{{ test_workers }}" ]; do wait -n || true; done
        one "${name}" "$@" > "reports/conformance-${name}.log" 2>&1 &
        names+=("${name}")
        pids+=("$!")
    }
    for backend in {{ adapters }}; do
        # The memory run also validates every message against the protocol schemas
        # (PROTO-004); it costs about four times the run, so the others skip it.
        extra=()
        if [ "${backend}" = memory ]; then extra=(--validate-protocol); fi
        start "${backend}" --adapter "{{ python }} -m conveyor.conformance_adapter --backend ${backend}" \
            ${extra[@]+"${extra[@]}"}
    done
    # HTTP mode: the vectors' publish, get, list and operations go through the binding, which
    # the adapter serves with conveyor web on its own app; then the binding's own checks. The
    # stateful suite runs above, directly, on the same backends.
    CONVEYOR_CONFORMANCE_HTTP_TOKEN="$("{{ python }}" -c 'import secrets; print(secrets.token_urlsafe(24))')"
    export CONVEYOR_CONFORMANCE_HTTP_TOKEN
    for backend in {{ http_adapters }}; do
        start "${backend}+http" \
            --adapter "{{ python }} -m conveyor.conformance_adapter --backend ${backend}" \
            --http auto --no-stateful
    done
    status=0
    for i in "${!pids[@]}"; do
        run_status=0
        wait "${pids[$i]}" || run_status=$?
        echo "== conformance: ${names[$i]}"
        cat "reports/conformance-${names[$i]}.log"
        if [ "${run_status}" -ne 0 ]; then status="${run_status}"; fi
    done
    exit "${status}"

# Build the sdists and wheels of the library and the conformance suite into dist/ (each wheel from
# its sdist), run twine check and check-wheel-contents, install the wheels into a fresh virtualenv
# and run the demo and the conformance suite from there (offline; `--resolve` takes the wheels'
# dependencies from the package index instead of .venv)
[positional-arguments]
release-check *args: _ensure-setup
    "{{ python }}" .ci/release_check.py "$@"

# Check every GitHub workflow offline: zizmor (pinned actions, least-privilege permissions,
# template injection, credential persistence) and the workflow JSON Schema (check-jsonschema's
# vendored copy of SchemaStore's github-workflow schema)
workflows-check:
    "{{ bin }}/zizmor" --offline .github/workflows
    "{{ bin }}/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml

# Pin the development environment (the dev extras of both packages) into requirements/dev.lock;
# `just setup` and the release workflow install within these pins
lock:
    "{{ bin }}/uv" pip compile python/pyproject.toml conformance-tests/pyproject.toml --extra dev --python-version 3.11 --universal --quiet --custom-compile-command "just lock" -o requirements/dev.lock

# Build the documentation site into ./site, failing on any warning
docs:
    "{{ bin }}/mkdocs" build --strict

# Load every page of the built site in headless Chromium: console errors, requests to other
# hosts, broken links and anchors, diagrams that did not render; screenshots in reports/docs-check
docs-check: docs
    "{{ python }}" -m pytest -q -p no:cacheprovider docs/tests
    "{{ python }}" docs/tools/check_site.py

# Serve the documentation with live reload on http://127.0.0.1:8000
docs-serve:
    "{{ bin }}/mkdocs" serve

# Benchmark Conveyor against raw SQL and raw pika baselines in the same run (extra args go to
# bench/run.py; the RabbitMQ part is skipped when the broker does not answer)
bench *args: _ensure-setup
    "{{ python }}" bench/run.py --broker {{ args }}

# Claims at scale on PostgreSQL: 1,000,000 jobs (50 % ready, 40 % delayed, 10 % finished) against
# 5,000, on a throwaway cluster at initdb's stock settings (extra args go to bench/scale.py:
# --sizes, --jobs, --url to measure an existing server instead)
[positional-arguments]
bench-scale *args: _ensure-setup
    "{{ python }}" bench/scale.py "$@"

# CPU time per job of the library's own process: publish, bulk publish, and claim + run + complete
# by one worker at its defaults, on SQLite and PostgreSQL (args go to bench/cpu_per_job.py:
# --jobs, --rounds, --backends, --against OTHER_CHECKOUT/python/src to compare two versions)
[positional-arguments]
bench-cpu *args: _ensure-setup
    "{{ python }}" bench/cpu_per_job.py "$@"

# The peers' virtualenv (bench/.peers-venv): pinned pgqueuer, Procrastinate, Dramatiq and Celery
# from bench/requirements-peers.txt, and this Conveyor; reinstalled when the pins change
[private]
_peers-venv:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="{{ peers_venv }}"
    stamp="${venv}/.requirements.sha256"
    want="$(sha256sum bench/requirements-peers.txt python/pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ ! -x "${venv}/bin/python" ]; then python3 -m venv "${venv}"; fi
    if [ "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]; then
        "${venv}/bin/python" -m pip install --quiet --upgrade pip
        "${venv}/bin/python" -m pip install --quiet -r bench/requirements-peers.txt -e "./python[postgresql,amqp]"
        echo "${want}" > "${stamp}"
    fi

# Benchmark Conveyor against pgqueuer, Procrastinate, Dramatiq and Celery in one run, each with its
# own worker CLI (extra args go to bench/peers/run.py: --rounds, --jobs, --only SYSTEM, ...)
[positional-arguments]
bench-peers *args: _peers-venv
    "{{ peers_venv }}/bin/python" bench/peers/run.py "$@"

# The I/O-bound benchmark: 10 ms handlers (sync and async) in one Conveyor process at concurrency
# 1, 8 and 32, against one Dramatiq process and one pgqueuer process (args go to bench/peers/run.py)
[positional-arguments]
bench-io *args: _peers-venv
    "{{ peers_venv }}/bin/python" bench/peers/run.py --io "$@"

# The full check run, in order, stopping at the first failure (sets up .venv if missing)
test: _ensure-setup spec-check lint typecheck workflows-check unit faults-short conformance docs docs-check release-check
    @echo "All checks passed."

[private]
faults-short:
    "{{ python }}" faults/run.py --short

# Remove build artefacts and caches (keeps .venv)
clean:
    rm -rf site build dist reports .pytest_cache .mypy_cache .ruff_cache .hypothesis
    find . \( -path ./.venv -o -path ./.git \) -prune -o -type d \( -name "*.egg-info" -o -name __pycache__ -o -name .pytest_cache -o -name .mypy_cache -o -name .ruff_cache -o -name .hypothesis \) -prune -print0 | xargs -0 rm -rf

# Remove build artefacts and the .venv
clean-all: clean
    rm -rf "{{ venv }}"
