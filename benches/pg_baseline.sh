#!/usr/bin/env bash
# PostgreSQL's own limit for a job queue on this host, to set the dispatch
# benchmark against: a raw claim-then-complete loop in batches of 100 (claim
# with UPDATE … SKIP LOCKED, then DELETE, two transactions), two clients,
# no run history. Prints jobs/s.
#
#   benches/pg_baseline.sh [postgres://postgres@127.0.0.1:5432/test] [seconds]
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
url="${1:-${FERRY_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}"
secs="${2:-10}"
db=ferry_pgbaseline
base="${url%/*}"
psql "$url" -qAt -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
trap 'psql "$url" -qAt -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
psql "$base/$db" -q <<'SQL'
CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'available',
                run_at bigint NOT NULL, lease int, payload text);
CREATE INDEX q_available ON q (run_at) WHERE state = 'available';
CREATE INDEX q_running ON q (lease) WHERE state = 'running';
INSERT INTO q (run_at) SELECT 1 FROM generate_series(1, 1000000);
VACUUM ANALYZE q;
SQL
script=$(mktemp)
cat >"$script" <<'SQL'
UPDATE q SET state = 'running', lease = :client_id WHERE id IN (SELECT id FROM q WHERE state = 'available' AND run_at <= 2 ORDER BY run_at LIMIT 100 FOR UPDATE SKIP LOCKED);
DELETE FROM q WHERE state = 'running' AND lease = :client_id;
SQL
tps=$(pgbench "$base/$db" -n -c 2 -j 2 -T "$secs" -f "$script" | awk '/^tps/ {print $3}')
rm -f "$script"
awk -v t="$tps" 'BEGIN { printf "PostgreSQL claim-then-complete loop, batches of 100: %.0f jobs/s\n", t * 100 }'
