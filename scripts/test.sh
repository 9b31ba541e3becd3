#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
#
# - system packages the tests use (docker-compose to validate the compose files, Debian's
#   Chromium for the browser tests, driven by Playwright; never a downloaded browser) are installed
#   with apt-get when we are root and they are missing; otherwise those tests skip and say why;
# - a virtual environment in .venv with the project and its test extras (torch pinned to 2.13.0);
# - pytest over tests/, in GCN_TEST_WORKERS processes (default 2, pytest-xdist; 0: in this one),
#   each with one torch thread (tests/conftest.py) and idle processes taking queued tests from busy
#   ones (--dist worksteal): on a 2-core AVX2 machine the suite took 1106 s in one process,
#   1022 s in two with two threads each (oversubscribed) and 619 s in two with one thread each.
#   Extra arguments go to pytest (e.g. `bash scripts/test.sh -k langevin`).
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
[ -x /usr/bin/chromium ] || want+=(chromium)
if [ ${#want[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing with apt-get: ${want[*]}"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null) \
            || echo "warning: apt-get could not install ${want[*]}; the tests that need them will skip"
    else
        echo "note: ${want[*]} missing and not root; the tests that need them will skip"
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -n "${GCN_TEST_WORKERS:-2}" --dist worksteal "$@"
