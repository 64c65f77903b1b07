-- Back to 2026-11-22-210000_bi_views and 2026-11-22-162700_order_effectivity: every user an
-- order was ever linked to, and without the effectivity table.
CREATE OR REPLACE VIEW bi.fact_order AS
SELECT h.h_order_pk, h.order_id, h.order_dt,
       (h.order_dt AT TIME ZONE 'UTC')::date AS order_date,
       ou.h_user_pk, hu.user_id,
       st.status, st.valid_from AS status_valid_from,
       co.cost, co.payment,
       v.update_ts AS version_update_ts, v.version_no AS versions,
       h.load_dt AS first_loaded_at
FROM dds.h_order h
LEFT JOIN dds.l_order_user ou ON ou.h_order_pk = h.h_order_pk
LEFT JOIN dds.h_user hu ON hu.h_user_pk = ou.h_user_pk
LEFT JOIN bi.order_status_history st ON st.h_order_pk = h.h_order_pk AND st.is_current
LEFT JOIN bi.order_cost_history co ON co.h_order_pk = h.h_order_pk AND co.is_current
LEFT JOIN bi.order_version_history v ON v.h_order_pk = h.h_order_pk AND v.is_current;
COMMENT ON VIEW bi.fact_order IS
    'Orders (dds.h_order) with user, current status, current cost and payment, and latest version. One row per order.';

CREATE OR REPLACE VIEW dds.v_order_latest_version AS
SELECT v.h_order_pk, v.update_ts, s.status, ou.h_user_pk
FROM (SELECT h_order_pk, max(update_ts) AS update_ts
      FROM dds.s_order_version GROUP BY h_order_pk) v
JOIN dds.v_order_latest_status s ON s.h_order_pk = v.h_order_pk
JOIN dds.l_order_user ou ON ou.h_order_pk = v.h_order_pk;

DROP VIEW IF EXISTS dds.v_order_latest_user;
DROP TABLE IF EXISTS dds.s_order_user_effectivity;
