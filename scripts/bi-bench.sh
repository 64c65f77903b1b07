#!/usr/bin/env bash
# The read side at scale (docs/bi.md, "At scale"; figures in docs/performance.md): fills a
# scratch warehouse with ORDERS synthetic orders, then times the queries a BI tool typically
# runs, on the bi views and, for comparison, on the history they used to recompute per query.
#
#   scripts/bi-bench.sh [ORDERS]        default 1,000,000; the issue's size is 5,000,000
#
# The warehouse is its own database (VAULTLINE_BI_DB, default vaultline_bi), created empty and
# migrated, then filled straight in SQL, as service-dds writes it: hubs, links and satellites
# keyed by the contract's hash keys (bi.hash_key), 10,000 users, 500 dishes in 20 categories,
# 2 dishes per order, orders over the last 30 days, a tenth of them with a second version
# (DELIVERING, then CLOSED or CANCELLED); staging holds each order's latest version and the
# datamart its state and counters, as the pipeline would. The point-in-time rows come from the migration's own
# backfill, dds.refresh_pit_order(NULL), timed as well (what an upgrade of such a warehouse
# costs). The database is kept for further queries, or for a drain into a warehouse of this
# size (docs/performance.md, "Cost as the warehouse grows"):
#   VAULTLINE_BENCH_DB=vaultline_bi VAULTLINE_BENCH_KEEP=1 scripts/bench.sh drain --orders 100000
# Drop it with
#   psql "${DATABASE_URL%/*}/postgres" -c 'DROP DATABASE vaultline_bi'
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"
ORDERS=${1:-1000000}
DB=${VAULTLINE_BI_DB:-vaultline_bi}
eval "$(scripts/stack.sh up)"
SERVER=${DATABASE_URL%/*}
psql "$SERVER/postgres" -qAt -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
cargo build --quiet --bin vaultctl
DATABASE_URL="$SERVER/$DB" target/debug/vaultctl migrate >/dev/null

sql() { psql "$SERVER/$DB" -qAt -v ON_ERROR_STOP=1 "$@"; }
seconds() { date +%s.%N; }

echo "filling $DB with $ORDERS orders ..."
started=$(seconds)
sql -v orders="$ORDERS" <<'SQL'
SET synchronous_commit = off;
-- The vault refuses updates row by row; a fill only inserts.
CREATE TEMPORARY TABLE u AS
SELECT g, lpad(to_hex(g), 24, '0') AS id, bi.hash_key(lpad(to_hex(g), 24, '0')) AS pk
FROM generate_series(0, 9999) g;
CREATE INDEX ON u (g);
CREATE TEMPORARY TABLE c AS
SELECT 'category ' || g AS name, bi.hash_key('category ' || g) AS pk, g FROM generate_series(0, 19) g;
CREATE TEMPORARY TABLE p AS
SELECT g, lpad(to_hex(1000000 + g), 24, '0') AS id, bi.hash_key(lpad(to_hex(1000000 + g), 24, '0')) AS pk,
       (SELECT pk FROM c WHERE c.g = p.g % 20) AS category
FROM generate_series(0, 499) AS p(g);
CREATE INDEX ON p (g);
CREATE INDEX ON p (pk);
CREATE TEMPORARY TABLE r AS
SELECT g, lpad(to_hex(2000000 + g), 24, '0') AS id, bi.hash_key(lpad(to_hex(2000000 + g), 24, '0')) AS pk
FROM generate_series(0, 49) g;

INSERT INTO dds.h_user SELECT pk, id, now(), 'bi-bench' FROM u;
INSERT INTO dds.s_user_names SELECT pk, 'user ' || id, 'login' || id, bi.hash_key(id), now() - interval '31 days', now(), 'bi-bench' FROM u;
INSERT INTO dds.h_category SELECT pk, name, now(), 'bi-bench' FROM c;
INSERT INTO dds.h_product SELECT pk, id, now(), 'bi-bench' FROM p;
INSERT INTO dds.s_product_names SELECT pk, 'dish ' || g, bi.hash_key('dish ' || g), now() - interval '31 days', now(), 'bi-bench' FROM p;
INSERT INTO dds.h_restaurant SELECT pk, id, now(), 'bi-bench' FROM r;
INSERT INTO dds.s_restaurant_names SELECT pk, 'restaurant ' || g, bi.hash_key('restaurant ' || g), now() - interval '31 days', now(), 'bi-bench' FROM r;
INSERT INTO dds.l_product_category SELECT bi.hash_key(p.pk || '_' || p.category), p.pk, p.category, now(), 'bi-bench' FROM p;
INSERT INTO dds.l_product_restaurant SELECT bi.hash_key(p.pk || '_' || r.pk), p.pk, r.pk, now(), 'bi-bench' FROM p JOIN r ON r.g = p.g % 50;

CREATE TEMPORARY TABLE o AS
SELECT n AS id, bi.hash_key(n::text) AS pk,
       date_trunc('second', now() - interval '1 hour' - random() * interval '30 days') AS placed,
       (SELECT pk FROM u WHERE u.g = (n::bigint * 7919) % 10000) AS u_pk,
       n % 10 = 0 AS twice,
       CASE WHEN n % 5 = 0 THEN 'CANCELLED' ELSE 'CLOSED' END AS status,
       (100 + n % 4900)::numeric AS cost,
       (SELECT pk FROM p WHERE p.g = n % 500) AS dish1,
       (SELECT pk FROM p WHERE p.g = (n * 13 + 1) % 500) AS dish2
FROM generate_series(1, :orders) AS s(n);
-- Each version: the final one, and for a tenth an earlier DELIVERING one.
CREATE TEMPORARY TABLE v AS
SELECT o.*, o.placed + interval '40 minutes' AS ts, o.status AS v_status FROM o
UNION ALL
SELECT o.*, o.placed + interval '10 minutes', 'DELIVERING' FROM o WHERE twice;

INSERT INTO dds.h_order SELECT pk, id, placed, now(), 'bi-bench' FROM o;
INSERT INTO dds.l_order_user SELECT bi.hash_key(pk || '_' || u_pk), pk, u_pk, now(), 'bi-bench', id FROM o;
INSERT INTO dds.s_order_user_effectivity SELECT bi.hash_key(pk || '_' || u_pk), ts, now(), 'bi-bench', id FROM v;
INSERT INTO dds.l_order_product SELECT bi.hash_key(o.pk || '_' || d), o.pk, d, now(), 'bi-bench', o.id
FROM o, LATERAL (SELECT DISTINCT d FROM unnest(ARRAY[dish1, dish2]) d) x;
INSERT INTO dds.l_order_product_category
SELECT bi.hash_key(o.pk || '_' || p.pk || '_' || p.category), o.pk, p.pk, p.category, now(), 'bi-bench', o.id
FROM o JOIN p ON p.pk IN (o.dish1, o.dish2);
INSERT INTO dds.s_order_product_category_effectivity
SELECT bi.hash_key(v.pk || '_' || p.pk || '_' || p.category), v.ts, now(), 'bi-bench', v.id
FROM v JOIN p ON p.pk IN (v.dish1, v.dish2);
INSERT INTO dds.s_order_cost SELECT pk, cost, cost, bi.hash_key(cost::text), placed + interval '10 minutes', now(), 'bi-bench', id FROM o;
INSERT INTO dds.s_order_status
SELECT pk, v_status, bi.hash_key(v_status), ts, now() + (ts - placed), 'bi-bench', id FROM v;
INSERT INTO dds.s_order_version SELECT pk, ts, now(), 'bi-bench', id FROM v;
INSERT INTO dds.order_load_state SELECT pk, id, max(ts), now() FROM v GROUP BY pk, id;
-- Staging and the datamart as the pipeline leaves them, so that a drain into this warehouse
-- (scripts/bench.sh with VAULTLINE_BENCH_KEEP=1) meets every table at this size: each order's
-- latest version staged, its datamart state, and the counters of its CLOSED orders.
INSERT INTO stg.order_events (object_id, object_type, sent_dttm, update_ts, payload)
SELECT o.id, 'order', o.placed + interval '40 minutes', o.placed + interval '40 minutes',
       jsonb_build_object(
           'date', o.placed, 'cost', o.cost, 'payment', o.cost, 'bonus_grant', 0,
           'bonus_payment', 0, 'final_status', o.status,
           'update_ts', o.placed + interval '40 minutes',
           'user', jsonb_build_object('id', u.id),
           'restaurant', jsonb_build_object('id', (SELECT id FROM r WHERE r.g = o.id % 50)),
           'order_items', (SELECT jsonb_agg(jsonb_build_object('id', p.id, 'name', 'dish ' || p.g,
                                  'price', 50, 'quantity', 1, 'category', c.name))
                           FROM p JOIN c ON c.pk = p.category WHERE p.pk IN (o.dish1, o.dish2)),
           'statuses', jsonb_build_array(
               jsonb_build_object('status', o.status, 'dttm', o.placed + interval '40 minutes'),
               jsonb_build_object('status', 'OPEN', 'dttm', o.placed)))
FROM o JOIN u ON u.pk = o.u_pk;
CREATE TEMPORARY TABLE od AS
SELECT o.pk, o.u_pk, o.status, p.pk AS dish, p.category FROM o JOIN p ON p.pk IN (o.dish1, o.dish2);
INSERT INTO cdm.order_state (order_id, user_id, update_ts, counted, product_ids, category_ids)
SELECT o.pk, o.u_pk, o.placed + interval '40 minutes', o.status = 'CLOSED', a.dishes, a.categories
FROM o JOIN (SELECT pk, array_agg(DISTINCT dish ORDER BY dish) AS dishes,
                    array_agg(DISTINCT category ORDER BY category) AS categories
             FROM od GROUP BY pk) a USING (pk);
INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt)
SELECT od.u_pk, od.dish, 'dish ' || p.g, count(DISTINCT od.pk)
FROM od JOIN p ON p.pk = od.dish WHERE od.status = 'CLOSED' GROUP BY od.u_pk, od.dish, p.g;
INSERT INTO cdm.user_category_counters (user_id, category_id, category_name, order_cnt)
SELECT od.u_pk, od.category, c.name, count(DISTINCT od.pk)
FROM od JOIN c ON c.pk = od.category WHERE od.status = 'CLOSED' GROUP BY od.u_pk, od.category, c.name;
SQL
filled=$(seconds)
sql -c "SELECT dds.refresh_pit_order(NULL)" \
  -c "INSERT INTO dds.pit_product SELECT * FROM dds.v_pit_product_recount" >/dev/null
backfilled=$(seconds)
sql -c "VACUUM ANALYZE" >/dev/null
printf 'filled in %.0f s; point-in-time backfill (dds.refresh_pit_order(NULL)) %.0f s; %s\n' \
  "$(echo "$filled - $started" | bc)" "$(echo "$backfilled - $filled" | bc)" \
  "$(sql -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"

USER_ID=$(sql -c "SELECT user_id FROM dds.h_user ORDER BY user_id LIMIT 1")
# name | query: each timed warm (the second of two runs), its rows counted, not printed.
QUERIES=(
  "orders per day, last week|SELECT * FROM bi.fact_orders_daily WHERE order_date >= current_date - 7 ORDER BY 1, 2"
  "one day's facts (count, revenue)|SELECT count(*), sum(payment) FROM bi.fact_order WHERE order_date = current_date - 3 AND status = 'CLOSED'"
  "one day's facts (every row)|SELECT * FROM bi.fact_order WHERE order_date = current_date - 3"
  "orders of the last day|SELECT count(*) FROM bi.fact_order WHERE order_dt >= now() - interval '1 day'"
  "one user's order history|SELECT * FROM bi.fact_order WHERE user_id = '$USER_ID' ORDER BY order_dt"
  "current dishes|SELECT * FROM bi.dim_product"
  "current users|SELECT * FROM bi.dim_user"
  "one order|SELECT * FROM bi.fact_order WHERE h_order_pk = bi.hash_key('4242')"
  "history: orders per day, last week|SELECT order_date, status, count(*), count(DISTINCT h_user_pk), sum(cost), sum(payment) FROM (SELECT *, (order_dt AT TIME ZONE 'UTC')::date AS order_date FROM dds.v_pit_order_recount) f WHERE order_date >= current_date - 7 GROUP BY 1, 2"
  "history: orders of the last day|SELECT count(*) FROM dds.v_pit_order_recount WHERE order_dt >= now() - interval '1 day'"
)
# Each query gets BI_BENCH_TIMEOUT (default 60 s); one that runs out is reported as such.
export PGOPTIONS="-c statement_timeout=${BI_BENCH_TIMEOUT:-60s}"
printf '%-40s %10s %10s\n' query rows ms
for entry in "${QUERIES[@]}"; do
  name=${entry%%|*}
  query=${entry#*|}
  if ! sql -c "$query" >/dev/null 2>&1; then
    printf '%-40s %10s %10s\n' "$name" - "> ${BI_BENCH_TIMEOUT:-60s}"
    continue
  fi
  out=$(sql -c '\timing on' -c "SELECT count(*) FROM ($query) q" 2>&1)
  rows=$(echo "$out" | sed -n 1p)
  ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
  printf '%-40s %10s %10.0f\n' "$name" "$rows" "$ms"
done
