# Conveyor task runner: the same recipes serve people and CI.
# Run `just --list` to see every recipe with its purpose.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
python := venv / "bin/python"
bin := venv / "bin"
peers_venv := justfile_directory() / "bench/.peers-venv"

# The conformance suite joins the lint and install steps once it has a package.
conformance_pkg := justfile_directory() / "conformance-tests/pyproject.toml"
lint_paths := if path_exists(conformance_pkg) == "true" { "python conformance-tests docs/hooks faults" } else { "python docs/hooks faults" }

# Backends the reference library's conformance adapter is run against (`+rabbitmq`: broker mode).
adapters := "memory sqlite postgresql mariadb postgresql+rabbitmq sqlite+rabbitmq"

# List the recipes
default:
    @"{{ just_executable() }}" --justfile "{{ justfile() }}" --list --unsorted

# Create .venv (if missing) and install the library, its dev tools and the conformance suite
setup:
    if [ ! -x "{{ python }}" ]; then python3 -m venv "{{ venv }}"; fi
    "{{ python }}" -m pip install --quiet --upgrade pip
    "{{ python }}" -m pip install -e "./python[dev]"
    if [ -f "{{ conformance_pkg }}" ]; then "{{ python }}" -m pip install -e ./conformance-tests; fi

[private]
_ensure-setup:
    if [ ! -x "{{ bin }}/pytest" ]; then "{{ just_executable() }}" --justfile "{{ justfile() }}" setup; fi

# Run the self-contained demo (embedded SQLite, no services needed)
demo *args:
    "{{ bin }}/conveyor" demo {{ args }}

# Check the spec files for consistency, then test the checker itself
spec-check:
    "{{ python }}" spec/tools/spec_check.py
    "{{ python }}" -m pytest -q spec/tools/tests

# Lint and check formatting (ruff); changes nothing
lint:
    "{{ bin }}/ruff" check {{ lint_paths }}
    "{{ bin }}/ruff" format --check {{ lint_paths }}

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
    cd python && "{{ python }}" -m pytest {{ args }}

# Workers killed, paused and cut off, a private RabbitMQ node stopped and killed, a proxy that
# partitions and slows links, poison messages and fuzzing (docs/operations/reliability.md)
# Run the fault suite (`--short`: the scenarios `just test` runs; `--list`; `--only NAME`)
[positional-arguments]
faults *args: _ensure-setup
    "{{ python }}" faults/run.py "$@"

# Start PostgreSQL, MariaDB and RabbitMQ if they are down, and wait until they answer
services:
    bash .ci/services.sh

# Run the conformance suite: its own tests, then every backend adapter of the reference library
# (extra arguments go to each run, e.g. `just conformance --thorough`)
conformance *args:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -f "{{ conformance_pkg }}" ]; then
        echo "conformance: the conformance suite lands in a later version; nothing to run."
        exit 0
    fi
    echo "== conformance: the suite's own tests"
    (cd conformance-tests && "{{ python }}" -m pytest -q -p no:cacheprovider)
    mkdir -p reports docs/conformance/reports
    status=0
    for backend in {{ adapters }}; do
        echo "== conformance: ${backend}"
        # The memory run also validates every message against the protocol schemas
        # (PROTO-004); it costs about four times the run, so the others skip it.
        extra=()
        if [ "${backend}" = memory ]; then extra=(--validate-protocol); fi
        "{{ bin }}/conveyor-conformance" run \
            --adapter "{{ python }} -m conveyor.conformance_adapter --backend ${backend}" \
            --report "reports/conformance-${backend}.json" ${extra[@]+"${extra[@]}"} {{ args }} || status=$?
        if [ -f "reports/conformance-${backend}.json" ]; then
            "{{ bin }}/conveyor-conformance" export "reports/conformance-${backend}.json" \
                --out "docs/conformance/reports/${backend}.json"
        fi
    done
    exit "${status}"

# Build the documentation site into ./site, failing on any warning
docs:
    "{{ bin }}/mkdocs" build --strict

# Serve the documentation with live reload on http://127.0.0.1:8000
docs-serve:
    "{{ bin }}/mkdocs" serve

# Benchmark Conveyor against raw SQL and raw pika baselines in the same run (extra args go to
# bench/run.py; the RabbitMQ part is skipped when the broker does not answer)
bench *args: _ensure-setup
    "{{ python }}" bench/run.py --broker {{ args }}

# Claims at scale on PostgreSQL: 1,000,000 jobs (50 % ready, 40 % delayed, 10 % finished) against
# 5,000, on the server's own settings (extra args go to bench/scale.py: --sizes, --jobs, --url)
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
test: _ensure-setup spec-check lint typecheck unit faults-short conformance docs
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
