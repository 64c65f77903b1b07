-- The recount views of 2026-11-22-162700_order_effectivity, cdm.v_user_product_recount and
-- cdm.v_user_category_recount, planned the way cdm.counter_differences() is
-- (2026-11-22-230000_recount_without_nested_loops): read directly, on tables that grew faster
-- than autovacuum analyzed them, Postgres joined the latest versions with nested loops and a
-- recount ran for minutes. Each view now reads a function that plans without nested loops;
-- names, columns and meaning stay (docs/contract.md §3.3), and cdm.counter_differences() reads
-- them as before.
--
-- The functions run as their owner (SECURITY DEFINER, with a fixed search_path), as a view
-- does: a function called from a view runs with the caller's privileges, so the least-privilege
-- cdm role (migrations/src/roles.rs), which may read cdm but not dds, was refused the recount
-- and service-cdm's counter check failed. cdm.counter_differences() gets the same.

CREATE OR REPLACE FUNCTION cdm.user_product_recount()
RETURNS TABLE (user_id uuid, product_id uuid, order_cnt integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
AS $$
SELECT h_user_pk, h_product_pk, count(DISTINCT h_order_pk)::integer
FROM dds.v_order_latest_lines
WHERE status = 'CLOSED'
GROUP BY h_user_pk, h_product_pk;
$$;

CREATE OR REPLACE FUNCTION cdm.user_category_recount()
RETURNS TABLE (user_id uuid, category_id uuid, order_cnt integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
AS $$
SELECT h_user_pk, h_category_pk, count(DISTINCT h_order_pk)::integer
FROM dds.v_order_latest_lines
WHERE status = 'CLOSED'
GROUP BY h_user_pk, h_category_pk;
$$;

CREATE OR REPLACE VIEW cdm.v_user_product_recount AS
SELECT user_id, product_id, order_cnt FROM cdm.user_product_recount();

CREATE OR REPLACE VIEW cdm.v_user_category_recount AS
SELECT user_id, category_id, order_cnt FROM cdm.user_category_recount();

ALTER FUNCTION cdm.counter_differences()
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
