#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check, check the import rules, build the docs and run the suite.
#   - Mosquitto and its C clients, and nats-server (the clustered broker of tests/test_cluster.py),
#     from Debian/Ubuntu (apt-get), when missing; rabbitmq-server (tests/test_gaps.py) when it can be
#   - this package with its `test` and `sumo` extras (pip, into the active Python environment; SUMO for tests/test_sumo.py)
# Extra arguments go to pytest: scripts/test.sh -k codec -x
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

if ! { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || ! command -v mosquitto_sub >/dev/null \
   || ! { command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; }; then
    echo "== installing mosquitto, mosquitto-clients and nats-server (apt-get)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients nats-server >/dev/null
fi
# RabbitMQ (its MQTT plugin: tests/test_gaps.py) is optional: when it cannot be installed, that test is skipped
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "== installing rabbitmq-server (apt-get; optional)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null; } \
        || echo "   rabbitmq-server could not be installed: tests/test_gaps.py's RabbitMQ test will be skipped"
fi

echo "== installing v2x-sim[test,sumo] (pip)"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,sumo]' 2>&1 | grep -vE "^WARNING: (Location|Running pip as)" || true
"$PY" -c "import v2x, google.protobuf, gmqtt, pytest_asyncio, libsumo, sumolib" # fail here, clearly, if the install did

echo "== ruff"
"$PY" -m ruff check v2x roadside cloud scripts tests bench
echo "== mypy --strict (v2x, roadside, cloud, bench)"
"$PY" -m mypy
echo "== lint-imports (the import rules: pyproject.toml [tool.importlinter])"
"$PY" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" --no-cache
echo "== mkdocs build --strict (docs/)"
SITE=$(mktemp -d)
"$PY" -m mkdocs build --strict --quiet --site-dir "$SITE"
rm -rf "$SITE"
echo "== pytest (4 workers)"
# 4 workers on 2 cores: many tests wait on the wall clock or the broker (docs/testing.md has the measurements).
# A group's tests share a worker (and its module fixture); the 20 slowest tests are shown.
"$PY" -m pytest -n 4 --dist loadgroup --durations=20 "$@"
