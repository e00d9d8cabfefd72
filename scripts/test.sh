#!/usr/bin/env bash
# The project's tests, from a fresh Debian machine: check for (and, as root, install) what they need
# beyond Python, install the Python side, start a throwaway PostgreSQL server, lint, run pytest.
#
#   bash scripts/test.sh                        # everything
#   bash scripts/test.sh tests/test_registry.py -x   # arguments go to pytest
#
# Needed beyond Python (Debian packages, installed with apt-get when run as root):
#   chromium, chromium-driver   the headless-browser checks of the report and the docs site (tests/test_report.py,
#                               tests/test_docs_site.py)
#   postgresql                  a throwaway server for the worker tests (tests/test_workers.py)
#   dataset-fashion-mnist       Fashion-MNIST for the CI-size studies (tests/test_evidence.py, test_tasks_data.py)
# Also needed: CIFAR-10 and Tiny Shakespeare in ../shared/data beside the checkout (or OPTARENA_SHARED_DATA).
# Missing and not installable (not root, no apt-get, install failed, no shared data): it stops before any
# test, listing what is missing and the command that gets each, and exits 1.
#
# Environment:
#   OPTARENA_TEST_POSTGRES=URL   use this PostgreSQL server instead of starting a throwaway one
#   OPTARENA_TEST_WITHOUT="..."  knowingly run without some of: chromium postgresql fashion-mnist shared-data
#                                (space or comma separated): not checked or installed, and the tests that
#                                would fail without it are deselected (those that skip by themselves skip)
#   OPTARENA_SHARED_DATA=DIR     where the shared data files are (default ../shared/data beside the checkout)
#   PYTHON=python3.12            the interpreter to install into and test with (default: python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test.sh: %s\n' "$*"; }

without=${OPTARENA_TEST_WITHOUT:-}
without=" ${without//,/ } "
for name in $without; do
    case $name in
        chromium | postgresql | fashion-mnist | shared-data) ;;
        *) say "OPTARENA_TEST_WITHOUT: unknown name '$name'; expected chromium, postgresql, fashion-mnist, shared-data" >&2
           exit 2 ;;
    esac
done
wanted() { [[ $without != *" $1 "* ]]; }

is_root=false
[ "$(id -u)" = 0 ] && is_root=true
sudo_=""
$is_root || sudo_="sudo "

# --------------------------------------------------------------------------------------------------
# What the tests need beyond Python.

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
FASHION=/usr/share/datasets/fashion-mnist

pg_bindir() {  # the newest Debian PostgreSQL with initdb, pg_ctl and postgres; empty if none
    local dir found=""
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && found="$found$dir"$'\n'
    done
    printf '%s' "$found" | sort -V | tail -n 1
}

missing_packages() {  # the Debian packages still missing, in install order
    local pkgs=()
    if wanted chromium; then
        [ -x "$CHROMIUM" ] || pkgs+=(chromium)
        [ -x "$CHROMEDRIVER" ] || pkgs+=(chromium-driver)
    fi
    if wanted postgresql && [ -z "${OPTARENA_TEST_POSTGRES:-}" ] && [ -z "$(pg_bindir)" ]; then
        pkgs+=(postgresql)
    fi
    if wanted fashion-mnist && [ ! -d "$FASHION" ]; then
        pkgs+=(dataset-fashion-mnist)
    fi
    [ ${#pkgs[@]} -eq 0 ] || printf '%s\n' "${pkgs[@]}"
}

mapfile -t packages < <(missing_packages)
if [ ${#packages[@]} -gt 0 ] && $is_root && command -v apt-get >/dev/null; then
    say "installing ${packages[*]} ..."
    apt_log=$(mktemp)
    if apt-get update -qq >"$apt_log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >>"$apt_log" 2>&1; then
        rm -f "$apt_log"
    else
        tail -n 20 "$apt_log" >&2
        rm -f "$apt_log"
        say "apt-get failed (output above)" >&2
    fi
    mapfile -t packages < <(missing_packages)
fi

problems=()  # "what: why\n    get it: command", one per missing thing
without_hint=()  # names for OPTARENA_TEST_WITHOUT beyond the missing packages
for pkg in "${packages[@]}"; do
    case $pkg in
        chromium) problems+=("Chromium ($CHROMIUM): the headless-browser checks of tests/test_report.py and tests/test_docs_site.py fail without it
    get it: ${sudo_}apt-get install -y chromium") ;;
        chromium-driver) problems+=("ChromeDriver ($CHROMEDRIVER): the same browser check fails without it
    get it: ${sudo_}apt-get install -y chromium-driver") ;;
        postgresql) problems+=("PostgreSQL server (/usr/lib/postgresql/*/bin/{initdb,pg_ctl,postgres}): tests/test_workers.py skips without one (with CI=true it errors)
    get it: ${sudo_}apt-get install -y postgresql   (or set OPTARENA_TEST_POSTGRES to an existing server's URL)") ;;
        dataset-fashion-mnist) problems+=("Fashion-MNIST ($FASHION): tests/test_evidence.py::test_every_study_of_the_project_runs_at_ci_size and tests/test_protocol_power.py::test_every_study_runs_at_ci_size fail, two tests in tests/test_tasks_data.py skip
    get it: ${sudo_}apt-get install -y dataset-fashion-mnist") ;;
    esac
done
if [ ${#packages[@]} -gt 0 ] && ! command -v apt-get >/dev/null; then
    problems+=("apt-get: not found; the packages above are Debian's (on another system, install their equivalents)")
fi

# The Python side: an interpreter that pip may install into.
PYTHON=${PYTHON:-$(command -v python || command -v python3 || true)}
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    problems+=("Python >= 3.10 (python or python3 on PATH, or PYTHON=...): nothing runs without it
    get it: ${sudo_}apt-get install -y python3 python3-venv")
elif ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    problems+=("pip for $PYTHON: the Python packages cannot be installed without it
    get it: $PYTHON -m ensurepip --upgrade   (or: ${sudo_}apt-get install -y python3-pip)")
elif [ -z "${PIP_BREAK_SYSTEM_PACKAGES:-}" ] && "$PYTHON" -c '
import os, sys, sysconfig
managed = os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
    problems+=("a Python environment pip may install into: $PYTHON is the system's (externally managed)
    get it: $PYTHON -m venv ~/.venvs/optarena && . ~/.venvs/optarena/bin/activate   (then rerun this script)")
fi

# The shared data folder: not installable, only reported.
shared=${OPTARENA_SHARED_DATA:-$(dirname "$PWD")/shared/data}
if wanted shared-data; then
    absent=()
    [ -f "$shared/cifar10-jpg.tar.gz" ] || absent+=(cifar10-jpg.tar.gz)
    [ -f "$shared/tinyshakespeare.txt" ] || absent+=(tinyshakespeare.txt)
    if [ ${#absent[@]} -eq 0 ]; then
        say "shared data: $shared (CIFAR-10 tarball, Tiny Shakespeare)"
    else
        problems+=("the shared data files ${absent[*]} in $shared: the CI-size study test reads both, and the real-data
    tests of tests/test_tasks_data.py skip without them
    get it: copy them there (see ../shared/data/README.md), or set OPTARENA_SHARED_DATA=DIR to where they are")
        without_hint+=(shared-data)
    fi
fi

if [ ${#problems[@]} -gt 0 ]; then
    {
        echo "test.sh: cannot run the tests; missing:"
        for p in "${problems[@]}"; do printf '  - %s\n' "$p"; done
        if [ $((${#packages[@]} + ${#without_hint[@]})) -gt 0 ]; then
            names=$(printf '%s\n' "${packages[@]}" "${without_hint[@]}" |
                sed 's/^chromium-driver$/chromium/; s/^dataset-fashion-mnist$/fashion-mnist/; /^$/d' | sort -u | paste -sd ' ')
            echo "Or knowingly run without them (the tests that would fail are deselected):"
            echo "  OPTARENA_TEST_WITHOUT=\"$names\" bash scripts/test.sh"
        fi
    } >&2
    exit 1
fi

pytest_args=()
if ! wanted chromium; then
    pytest_args+=(--deselect tests/test_report.py::test_report_renders_in_headless_chromium)
    pytest_args+=(--deselect tests/test_docs_site.py::test_the_site_renders_in_headless_chromium)
fi
if ! wanted fashion-mnist || ! wanted shared-data; then
    pytest_args+=(--deselect tests/test_evidence.py::test_every_study_of_the_project_runs_at_ci_size)
    pytest_args+=(--deselect "tests/test_protocol_power.py::test_every_study_runs_at_ci_size")  # Fashion-MNIST studies
fi
if ! wanted postgresql && [ -z "${OPTARENA_TEST_POSTGRES:-}" ] && [ "${CI:-}" = true ]; then
    pytest_args+=(--ignore tests/test_workers.py)  # it refuses to be collected under CI=true without a server
fi
if [ "${CI:-}" = true ]; then
    pytest_args+=(--durations=25)  # CI has a time budget: its log names the slowest tests
fi

# --------------------------------------------------------------------------------------------------
# Python packages, into the current interpreter (an activated venv, or the machine's Python).

say "installing torch==2.13.0 and optarena[test] into $PYTHON ..."
"$PYTHON" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"

say "ruff check, ruff format --check ..."
"$PYTHON" -m ruff check src tests examples benchmarks docs/gen_cards.py
"$PYTHON" -m ruff format --check src tests examples benchmarks docs/gen_cards.py

# --------------------------------------------------------------------------------------------------
# A throwaway PostgreSQL server for tests/test_workers.py: its own data directory in a fresh temporary
# folder, on 127.0.0.1 and a unix socket in that folder, stopped and deleted on exit.

pg_tmp=""
as_pg() {  # run a PostgreSQL program as the user that owns the throwaway server (initdb refuses root)
    if $is_root; then
        (cd "$pg_tmp" && runuser -u postgres -- "$@")
    else
        (cd "$pg_tmp" && "$@")
    fi
}
stop_postgres() {
    [ -n "$pg_tmp" ] && [ -d "$pg_tmp" ] || return 0
    if [ -f "$pg_tmp/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$pg_tmp/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_pg "$PG_BIN/pg_ctl" -D "$pg_tmp/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        if [ -f "$pg_tmp/data/postmaster.pid" ]; then
            pid=$(head -n 1 "$pg_tmp/data/postmaster.pid")
            if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -rf "$pg_tmp"
    pg_tmp=""
}
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -n "${OPTARENA_TEST_POSTGRES:-}" ]; then
    say "PostgreSQL: the given OPTARENA_TEST_POSTGRES server"
elif wanted postgresql; then
    PG_BIN=$(pg_bindir)
    if $is_root; then
        id postgres >/dev/null 2>&1 || { say "no 'postgres' system user to run the server as (apt-get install postgresql creates it)" >&2; exit 1; }
        pg_tmp=$(mktemp -d /tmp/optarena-pg.XXXXXX)
        chown postgres: "$pg_tmp"
    else
        pg_tmp=$(mktemp -d "${TMPDIR:-/tmp}/optarena-pg.XXXXXX")
    fi
    chmod 700 "$pg_tmp"
    # shellcheck disable=SC2016  # $1 is for the inner sh
    as_pg sh -c 'echo postgres > "$1"' sh "$pg_tmp/pwfile"
    as_pg "$PG_BIN/initdb" -D "$pg_tmp/data" --username=postgres --pwfile="$pg_tmp/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >"$pg_tmp/initdb.log" 2>&1 ||
        { cat "$pg_tmp/initdb.log" >&2; say "initdb failed" >&2; exit 1; }
    started=false
    for _ in 1 2 3; do  # a free port can be taken between asking and binding: try another
        PG_PORT=$(free_port)
        if as_pg "$PG_BIN/pg_ctl" -D "$pg_tmp/data" -l "$pg_tmp/server.log" -w -t 60 start \
            -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$pg_tmp' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            >/dev/null 2>&1; then
            started=true
            break
        fi
    done
    $started || { tail -n 20 "$pg_tmp/server.log" >&2; say "the throwaway PostgreSQL did not start" >&2; exit 1; }
    as_pg "$PG_BIN/psql" -h "$pg_tmp" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE optarena LOGIN PASSWORD 'optarena'" -c "CREATE DATABASE optarena OWNER optarena" >/dev/null
    export OPTARENA_TEST_POSTGRES="postgresql+psycopg2://optarena:optarena@127.0.0.1:$PG_PORT/optarena"
    say "PostgreSQL $("$PG_BIN/postgres" --version | sed -n 's/.*(PostgreSQL) \([0-9.]*\).*/\1/p') on 127.0.0.1:$PG_PORT (throwaway, in $pg_tmp)"
else
    say "PostgreSQL: none (OPTARENA_TEST_WITHOUT names it): tests/test_workers.py is skipped"
fi

# --------------------------------------------------------------------------------------------------

say "python -m pytest -q $(printf '%s ' "${pytest_args[@]}" "$@")"
"$PYTHON" -m pytest -q "${pytest_args[@]}" "$@"
