#!/usr/bin/env bash
# schemathesis against a live `paretoml serve` with an API token, every check, every phase.
# The server gets an empty temporary database and runs no study (PARETOML_STUDY_CONCURRENCY=0:
# jobs are accepted and stored, none is started, Ray is not started), so the POSTs cannot load
# the machine; it is ended afterwards. Usage: benchmarks/schemathesis_live.sh [MAX_EXAMPLES] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
out="${2:-/dev/stdout}"
port="${PARETOML_PORT:-18422}"
token="schemathesis-token"
tmp="$(mktemp -d)"
PARETOML_API_TOKEN="$token" PARETOML_DATABASE_URL="sqlite:///$tmp/live.db" PARETOML_STUDY_CONCURRENCY=0 \
    PARETOML_HOST=127.0.0.1 PARETOML_PORT="$port" .venv/bin/paretoml serve >"$tmp/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && break
    sleep 1
done
command=(.venv/bin/python -m schemathesis.cli --config-file benchmarks/schemathesis.toml run
         "http://127.0.0.1:$port/openapi.json" --checks all --max-examples "$examples"
         -H "Authorization: Bearer $token")
status=0
{
    echo "# $(date -u +%FT%TZ) on $(hostname): ${command[*]/$token/<token>}"
    echo "# schemathesis $(.venv/bin/python -c 'import schemathesis; print(schemathesis.__version__)'), server: paretoml serve, empty SQLite, PARETOML_STUDY_CONCURRENCY=0"
    "${command[@]}" 2>&1 | sed "s/$token/<token>/g"
} >"$out" || status=$?
exit "$status"
