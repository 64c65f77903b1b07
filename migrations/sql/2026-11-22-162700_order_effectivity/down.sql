-- Back to the recount of 2026-11-21-000001_warehouse (every dish and category an order ever
-- had), and without the effectivity tables.
DROP VIEW IF EXISTS cdm.v_counter_differences;
DROP VIEW IF EXISTS cdm.v_user_product_recount;
DROP VIEW IF EXISTS cdm.v_user_category_recount;
DROP VIEW IF EXISTS dds.v_order_latest_lines;
DROP VIEW IF EXISTS dds.v_order_latest_version;
DROP TABLE IF EXISTS dds.s_order_product_category_effectivity;
DROP TABLE IF EXISTS dds.l_order_product_category;
DROP TABLE IF EXISTS dds.s_order_version;

CREATE VIEW cdm.v_user_product_recount AS
SELECT ou.h_user_pk AS user_id, op.h_product_pk AS product_id,
       count(DISTINCT s.h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_status s
JOIN dds.l_order_user ou ON ou.h_order_pk = s.h_order_pk
JOIN dds.l_order_product op ON op.h_order_pk = s.h_order_pk
WHERE s.status = 'CLOSED'
GROUP BY ou.h_user_pk, op.h_product_pk;

CREATE VIEW cdm.v_user_category_recount AS
SELECT ou.h_user_pk AS user_id, pc.h_category_pk AS category_id,
       count(DISTINCT s.h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_status s
JOIN dds.l_order_user ou ON ou.h_order_pk = s.h_order_pk
JOIN dds.l_order_product op ON op.h_order_pk = s.h_order_pk
JOIN dds.l_product_category pc ON pc.h_product_pk = op.h_product_pk
WHERE s.status = 'CLOSED'
GROUP BY ou.h_user_pk, pc.h_category_pk;
