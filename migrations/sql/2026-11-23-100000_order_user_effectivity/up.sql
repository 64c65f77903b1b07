-- Order→user effectivity (docs/contract.md §3.3): which user each order version belongs to.
--
-- A later version of an order may name another user. The counters follow it (the order counts
-- for the user of its latest version, vault-core/src/counter.rs), but `dds.l_order_user` only
-- says that an order was once linked to a user: with two links, the recount counted the order
-- for both users. An effectivity satellite on the link, as for the order's dishes
-- (2026-11-22-162700_order_effectivity), says which link applies when:
--   dds.s_order_user_effectivity   driving key the order: one row per applied order version,
--       keyed by the link in effect at that version (the user the version names) and the
--       version's update_ts. Insert-only; nothing is ever updated.
-- service-dds writes a row with every version it applies (vault-core/src/vault.rs).

CREATE TABLE IF NOT EXISTS dds.s_order_user_effectivity (
    hk_order_user_pk uuid        NOT NULL,
    update_ts        timestamptz NOT NULL,
    load_dt          timestamptz NOT NULL,
    load_src         text        NOT NULL,
    PRIMARY KEY (hk_order_user_pk, update_ts)
);

-- Insert-only, like the rest of the vault: UPDATE, DELETE and TRUNCATE are refused, row by row
-- and per statement (2026-11-21-000001_warehouse, 2026-11-22-100000).
DROP TRIGGER IF EXISTS insert_only ON dds.s_order_user_effectivity;
CREATE TRIGGER insert_only BEFORE UPDATE OR DELETE ON dds.s_order_user_effectivity
    FOR EACH ROW EXECUTE FUNCTION dds.refuse_update();
DROP TRIGGER IF EXISTS insert_only_statement ON dds.s_order_user_effectivity;
CREATE TRIGGER insert_only_statement BEFORE UPDATE OR DELETE ON dds.s_order_user_effectivity
    FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change();
DROP TRIGGER IF EXISTS insert_only_truncate ON dds.s_order_user_effectivity;
CREATE TRIGGER insert_only_truncate BEFORE TRUNCATE ON dds.s_order_user_effectivity
    FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change();

-- ---------------------------------------------------------------- backfill
-- Every applied order version (dds.s_order_version) gets the link in effect at it. An order
-- with one link: that link, exactly. An order with several (a version named another user),
-- the best evidence there is, in this order:
--   1. stg.order_events, when it holds this very version (same update_ts): the user its raw
--      payload names. stg keeps each order's newest version, so this is exact for the latest
--      applied version unless a newer one was staged and not yet applied;
--   2. cdm.order_state, when the datamart applied this very version: the user it counted the
--      order for. Exact as well;
--   3. otherwise, the link loaded most recently no later than the version itself (service-dds
--      writes a version's links and its s_order_version row in one load, with one load_dt, and
--      links are insert-once). Right when each user change named a user new to the order;
--      wrong only for an older version of an order that went back to an earlier user (A, B,
--      then A again), which the views never read (they follow each order's latest version,
--      for which 1 or 2 normally decides). Ties (versions of one order applied in one batch)
--      fall to the link loaded last, then to the smaller key, so the choice is deterministic.
-- The previous release's orders (backfilled into s_order_version by the migration of
-- 2026-11-22-162700) have only their latest version, which 1 and 2 cover.
INSERT INTO dds.s_order_user_effectivity (hk_order_user_pk, update_ts, load_dt, load_src)
SELECT DISTINCT ON (v.h_order_pk, v.update_ts)
       ou.hk_order_user_pk, v.update_ts, now(), 'migration 2026-11-23-100000'
FROM dds.s_order_version v
JOIN dds.l_order_user ou ON ou.h_order_pk = v.h_order_pk
JOIN dds.h_order o ON o.h_order_pk = v.h_order_pk
LEFT JOIN dds.h_user u ON u.h_user_pk = ou.h_user_pk
LEFT JOIN stg.order_events se ON se.object_id = o.order_id AND se.update_ts = v.update_ts
LEFT JOIN cdm.order_state cs ON cs.order_id = v.h_order_pk AND cs.update_ts = v.update_ts
ORDER BY v.h_order_pk, v.update_ts,
         (se.payload -> 'user' ->> 'id' = u.user_id) IS TRUE DESC,
         (cs.user_id = ou.h_user_pk) IS TRUE DESC,
         (ou.load_dt <= v.load_dt) DESC,
         ou.load_dt DESC,
         ou.hk_order_user_pk
ON CONFLICT DO NOTHING;

-- ---------------------------------------------------------------- the recount and bi views
-- Each order's user is the one in effect at its latest applied version: written once, here,
-- and read by the recount (dds.v_order_latest_version and the views over it, hence
-- cdm.v_counter_differences and `vaultctl verify`) and by bi.fact_order.
--
-- Joined by equality on (order) and (link, version) only, so that it plans as hash joins like
-- the rest of the recount (2026-11-22-230000_recount_without_nested_loops): one more pass over
-- l_order_user and over this table, both one row per order or per version.
CREATE VIEW dds.v_order_latest_user AS
SELECT v.h_order_pk, v.update_ts, ou.h_user_pk, ou.hk_order_user_pk
FROM (SELECT h_order_pk, max(update_ts) AS update_ts
      FROM dds.s_order_version GROUP BY h_order_pk) v
JOIN dds.l_order_user ou ON ou.h_order_pk = v.h_order_pk
JOIN dds.s_order_user_effectivity e
  ON e.hk_order_user_pk = ou.hk_order_user_pk AND e.update_ts = v.update_ts;

-- Same columns as before (2026-11-22-162700), so the views over it keep their definitions;
-- only the user changes: the latest version's, not every user the order ever had.
CREATE OR REPLACE VIEW dds.v_order_latest_version AS
SELECT u.h_order_pk, u.update_ts, s.status, u.h_user_pk
FROM dds.v_order_latest_user u
JOIN dds.v_order_latest_status s ON s.h_order_pk = u.h_order_pk;

-- One row per order again (an order re-sent for another user had one per user), with the
-- user of its latest version. Same columns as 2026-11-22-210000_bi_views, so their comments
-- and bi.fact_orders_daily stay as they are.
CREATE OR REPLACE VIEW bi.fact_order AS
SELECT h.h_order_pk, h.order_id, h.order_dt,
       (h.order_dt AT TIME ZONE 'UTC')::date AS order_date,
       ou.h_user_pk, hu.user_id,
       st.status, st.valid_from AS status_valid_from,
       co.cost, co.payment,
       v.update_ts AS version_update_ts, v.version_no AS versions,
       h.load_dt AS first_loaded_at
FROM dds.h_order h
LEFT JOIN dds.v_order_latest_user ou ON ou.h_order_pk = h.h_order_pk
LEFT JOIN dds.h_user hu ON hu.h_user_pk = ou.h_user_pk
LEFT JOIN bi.order_status_history st ON st.h_order_pk = h.h_order_pk AND st.is_current
LEFT JOIN bi.order_cost_history co ON co.h_order_pk = h.h_order_pk AND co.is_current
LEFT JOIN bi.order_version_history v ON v.h_order_pk = h.h_order_pk AND v.is_current;

COMMENT ON VIEW bi.fact_order IS
    'Orders (dds.h_order) with the user of the latest version, current status, current cost and payment, and latest version. One row per order.';
