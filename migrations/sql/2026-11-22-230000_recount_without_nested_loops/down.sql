-- Back to the plain view of 2026-11-22-162700_order_effectivity.
CREATE OR REPLACE VIEW cdm.v_counter_differences AS
SELECT 'product'::text AS counter,
       coalesce(c.user_id, r.user_id) AS user_id,
       coalesce(c.product_id, r.product_id) AS item_id,
       coalesce(c.product_name, n.name, h.product_id) AS item_name,
       coalesce(c.order_cnt, 0) AS counted,
       coalesce(r.order_cnt, 0) AS recounted
FROM cdm.user_product_counters c
FULL JOIN cdm.v_user_product_recount r
  ON r.user_id = c.user_id AND r.product_id = c.product_id
LEFT JOIN dds.h_product h ON h.h_product_pk = coalesce(c.product_id, r.product_id)
LEFT JOIN LATERAL (SELECT s.name FROM dds.s_product_names s
                   WHERE s.h_product_pk = h.h_product_pk
                   ORDER BY s.load_dt DESC LIMIT 1) n ON true
WHERE coalesce(c.order_cnt, 0) <> coalesce(r.order_cnt, 0)
UNION ALL
SELECT 'category'::text,
       coalesce(c.user_id, r.user_id),
       coalesce(c.category_id, r.category_id),
       coalesce(c.category_name, h.category_name),
       coalesce(c.order_cnt, 0),
       coalesce(r.order_cnt, 0)
FROM cdm.user_category_counters c
FULL JOIN cdm.v_user_category_recount r
  ON r.user_id = c.user_id AND r.category_id = c.category_id
LEFT JOIN dds.h_category h ON h.h_category_pk = coalesce(c.category_id, r.category_id)
WHERE coalesce(c.order_cnt, 0) <> coalesce(r.order_cnt, 0);
DROP FUNCTION IF EXISTS cdm.counter_differences();
