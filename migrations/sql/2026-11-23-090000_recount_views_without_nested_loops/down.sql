-- Back to the plain views of 2026-11-22-162700_order_effectivity, and a
-- cdm.counter_differences() that runs as its caller.
ALTER FUNCTION cdm.counter_differences()
    SECURITY INVOKER
    RESET search_path;

CREATE OR REPLACE VIEW cdm.v_user_product_recount AS
SELECT h_user_pk AS user_id, h_product_pk AS product_id,
       count(DISTINCT h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_lines
WHERE status = 'CLOSED'
GROUP BY h_user_pk, h_product_pk;

CREATE OR REPLACE VIEW cdm.v_user_category_recount AS
SELECT h_user_pk AS user_id, h_category_pk AS category_id,
       count(DISTINCT h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_lines
WHERE status = 'CLOSED'
GROUP BY h_user_pk, h_category_pk;

DROP FUNCTION IF EXISTS cdm.user_category_recount();
DROP FUNCTION IF EXISTS cdm.user_product_recount();
