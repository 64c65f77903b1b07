-- Lookups by order id, after 2026-12-03-120000_order_scoped_keys keyed an order's links and
-- satellites by it:
--   the order hub's business key is unique and indexed (as a hub's business key is in Data
--   Vault practice; sequential, so its entries land in the newest pages), so that
--   dds.refresh_pit_order of a few orders, and anything else that goes from a hash key to the
--   order's rows, finds the order id by key;
--   dds.pit_order is indexed by order id too, so bi.fact_order answers a filter on either key;
--   an effectivity row is joined to its link by the link's key alone, as before 120000: with
--   the order id in the join as well, the planner multiplies the two keys' selectivities,
--   although one determines the other, expects one row where there is one per line, and
--   chose nested loops that made the full recount (`vaultctl verify`) and BI queries over it
--   run for minutes on a warehouse of 1 million orders. A few orders' recount filters both
--   tables by the order ids instead, each by its key (to recount a few orders, call
--   dds.pit_order_recount_by_id with their ids: dds.pit_order_recount with hash keys is
--   planned for any keys and reads the satellites through).
CREATE UNIQUE INDEX h_order_order_id_key ON dds.h_order (order_id);
CREATE INDEX pit_order_order_id_idx ON dds.pit_order (order_id);

CREATE OR REPLACE FUNCTION dds.pit_order_recount_by_id(ids bigint[])
RETURNS TABLE (h_order_pk uuid, order_id bigint, order_dt timestamptz, h_user_pk uuid,
               status text, status_valid_from timestamptz, cost numeric(19, 5),
               payment numeric(19, 5), version_update_ts timestamptz, versions bigint,
               first_loaded_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT h.h_order_pk, h.order_id, h.order_dt, lu.h_user_pk,
           st.status, st.update_ts, co.cost, co.payment, v.update_ts, v.versions, h.load_dt
    FROM dds.h_order h
    LEFT JOIN (SELECT s.order_id, max(s.update_ts) AS update_ts, count(*) AS versions
               FROM dds.s_order_version s
               WHERE ids IS NULL OR s.order_id = ANY (ids)
               GROUP BY s.order_id) v
      ON v.order_id = h.order_id
    LEFT JOIN (SELECT ou.order_id, ou.h_user_pk, e.update_ts
               FROM dds.l_order_user ou
               JOIN dds.s_order_user_effectivity e ON e.hk_order_user_pk = ou.hk_order_user_pk
               WHERE ids IS NULL OR (ou.order_id = ANY (ids) AND e.order_id = ANY (ids))) lu
      ON lu.order_id = h.order_id AND lu.update_ts = v.update_ts
    LEFT JOIN (SELECT DISTINCT ON (s.order_id) s.order_id, s.status, s.update_ts
               FROM dds.s_order_status s
               WHERE ids IS NULL OR s.order_id = ANY (ids)
               ORDER BY s.order_id, s.update_ts DESC, s.load_dt DESC) st
      ON st.order_id = h.order_id
    LEFT JOIN (SELECT DISTINCT ON (s.order_id) s.order_id, s.cost, s.payment
               FROM dds.s_order_cost s
               WHERE ids IS NULL OR s.order_id = ANY (ids)
               ORDER BY s.order_id, s.update_ts DESC, s.load_dt DESC) co
      ON co.order_id = h.order_id
    WHERE ids IS NULL OR h.order_id = ANY (ids)
$$;

CREATE OR REPLACE VIEW bi.order_line_history AS
SELECT l.hk_order_product_category_pk, l.h_order_pk, v.order_id,
       l.h_product_pk, p.product_id, l.h_category_pk, c.category_name,
       v.valid_from, v.valid_to, v.is_current, v.version_no,
       e.update_ts, e.load_dt, e.load_src
FROM dds.s_order_product_category_effectivity e
JOIN dds.l_order_product_category l
  ON l.hk_order_product_category_pk = e.hk_order_product_category_pk
JOIN bi.order_version_history v ON v.order_id = l.order_id AND v.update_ts = e.update_ts
LEFT JOIN dds.h_product p ON p.h_product_pk = l.h_product_pk
LEFT JOIN dds.h_category c ON c.h_category_pk = l.h_category_pk;
