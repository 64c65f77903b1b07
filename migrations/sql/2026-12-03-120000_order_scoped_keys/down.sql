-- Back to 2026-12-03-010000: the order-scoped links and satellites keyed by hash keys alone.
-- The history views as they were, their satellites' columns listed (not `s.*`), so that the
-- order id can be dropped.
CREATE OR REPLACE VIEW bi.order_cost_history AS
SELECT s.h_order_pk, h.order_id, s.cost, s.payment, s.hk_order_cost_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.h_order_pk, s.cost, s.payment, s.hk_order_cost_hashdiff, s.update_ts, s.load_dt, s.load_src,
             s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_cost s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

CREATE OR REPLACE VIEW bi.order_status_history AS
SELECT s.h_order_pk, h.order_id, s.status, s.hk_order_status_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.h_order_pk, s.status, s.hk_order_status_hashdiff, s.update_ts, s.load_dt, s.load_src,
             s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_status s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

CREATE OR REPLACE VIEW bi.order_version_history AS
SELECT s.h_order_pk, h.order_id,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.version_no,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.h_order_pk, s.update_ts, s.load_dt, s.load_src,
             s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to, row_number() OVER w AS version_no
      FROM dds.s_order_version s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

CREATE OR REPLACE VIEW bi.order_line_history AS
SELECT l.hk_order_product_category_pk, l.h_order_pk, v.order_id,
       l.h_product_pk, p.product_id, l.h_category_pk, c.category_name,
       v.valid_from, v.valid_to, v.is_current, v.version_no,
       e.update_ts, e.load_dt, e.load_src
FROM dds.s_order_product_category_effectivity e
JOIN dds.l_order_product_category l
  ON l.hk_order_product_category_pk = e.hk_order_product_category_pk
JOIN bi.order_version_history v ON v.h_order_pk = l.h_order_pk AND v.update_ts = e.update_ts
LEFT JOIN dds.h_product p ON p.h_product_pk = l.h_product_pk
LEFT JOIN dds.h_category c ON c.h_category_pk = l.h_category_pk;

CREATE OR REPLACE FUNCTION dds.refresh_pit_order(orders uuid[]) RETURNS bigint LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    rows bigint;
BEGIN
    WITH changed AS (
        INSERT INTO dds.pit_order AS p
            (h_order_pk, order_id, order_dt, h_user_pk, status, status_valid_from, cost,
             payment, version_update_ts, versions, first_loaded_at)
        SELECT h_order_pk, order_id, order_dt, h_user_pk, status, status_valid_from, cost,
               payment, version_update_ts, versions, first_loaded_at
        FROM dds.pit_order_recount(orders)
        ORDER BY h_order_pk
        ON CONFLICT (h_order_pk) DO UPDATE
        SET order_id = EXCLUDED.order_id, order_dt = EXCLUDED.order_dt,
            h_user_pk = EXCLUDED.h_user_pk, status = EXCLUDED.status,
            status_valid_from = EXCLUDED.status_valid_from, cost = EXCLUDED.cost,
            payment = EXCLUDED.payment, version_update_ts = EXCLUDED.version_update_ts,
            versions = EXCLUDED.versions, first_loaded_at = EXCLUDED.first_loaded_at
        WHERE (p.order_id, p.order_dt, p.h_user_pk, p.status, p.status_valid_from, p.cost,
               p.payment, p.version_update_ts, p.versions, p.first_loaded_at)
              IS DISTINCT FROM
              (EXCLUDED.order_id, EXCLUDED.order_dt, EXCLUDED.h_user_pk, EXCLUDED.status,
               EXCLUDED.status_valid_from, EXCLUDED.cost, EXCLUDED.payment,
               EXCLUDED.version_update_ts, EXCLUDED.versions, EXCLUDED.first_loaded_at)
        RETURNING 1)
    SELECT count(*) INTO rows FROM changed;
    RETURN rows;
END;
$$;

CREATE OR REPLACE FUNCTION dds.pit_order_recount(orders uuid[])
RETURNS TABLE (h_order_pk uuid, order_id bigint, order_dt timestamptz, h_user_pk uuid,
               status text, status_valid_from timestamptz, cost numeric(19, 5),
               payment numeric(19, 5), version_update_ts timestamptz, versions bigint,
               first_loaded_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT h.h_order_pk, h.order_id, h.order_dt, lu.h_user_pk,
           st.status, st.update_ts, co.cost, co.payment, v.update_ts, v.versions, h.load_dt
    FROM dds.h_order h
    LEFT JOIN (SELECT s.h_order_pk, max(s.update_ts) AS update_ts, count(*) AS versions
               FROM dds.s_order_version s
               WHERE orders IS NULL OR s.h_order_pk = ANY (orders)
               GROUP BY s.h_order_pk) v
      ON v.h_order_pk = h.h_order_pk
    LEFT JOIN (SELECT ou.h_order_pk, ou.h_user_pk, e.update_ts
               FROM dds.l_order_user ou
               JOIN dds.s_order_user_effectivity e ON e.hk_order_user_pk = ou.hk_order_user_pk
               WHERE orders IS NULL OR ou.h_order_pk = ANY (orders)) lu
      ON lu.h_order_pk = h.h_order_pk AND lu.update_ts = v.update_ts
    LEFT JOIN (SELECT DISTINCT ON (s.h_order_pk) s.h_order_pk, s.status, s.update_ts
               FROM dds.s_order_status s
               WHERE orders IS NULL OR s.h_order_pk = ANY (orders)
               ORDER BY s.h_order_pk, s.update_ts DESC, s.load_dt DESC) st
      ON st.h_order_pk = h.h_order_pk
    LEFT JOIN (SELECT DISTINCT ON (s.h_order_pk) s.h_order_pk, s.cost, s.payment
               FROM dds.s_order_cost s
               WHERE orders IS NULL OR s.h_order_pk = ANY (orders)
               ORDER BY s.h_order_pk, s.update_ts DESC, s.load_dt DESC) co
      ON co.h_order_pk = h.h_order_pk
    WHERE orders IS NULL OR h.h_order_pk = ANY (orders)
$$;
DROP FUNCTION dds.pit_order_recount_by_id(bigint[]);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'l_order_user', 'l_order_product', 'l_order_product_category', 's_order_cost',
        's_order_status', 's_order_version', 's_order_user_effectivity',
        's_order_product_category_effectivity'
    ] LOOP
        EXECUTE format('ALTER TABLE dds.%I DROP CONSTRAINT %I', t, t || '_pkey');
        EXECUTE format('ALTER TABLE dds.%I DROP COLUMN order_id', t);
    END LOOP;
END;
$$;
ALTER TABLE dds.l_order_user ADD PRIMARY KEY (hk_order_user_pk);
ALTER TABLE dds.l_order_product ADD PRIMARY KEY (hk_order_product_pk);
ALTER TABLE dds.l_order_product_category ADD PRIMARY KEY (hk_order_product_category_pk);
ALTER TABLE dds.s_order_cost ADD PRIMARY KEY (h_order_pk, load_dt);
ALTER TABLE dds.s_order_status ADD PRIMARY KEY (h_order_pk, load_dt);
ALTER TABLE dds.s_order_version ADD PRIMARY KEY (h_order_pk, update_ts);
ALTER TABLE dds.s_order_user_effectivity ADD PRIMARY KEY (hk_order_user_pk, update_ts);
ALTER TABLE dds.s_order_product_category_effectivity
    ADD PRIMARY KEY (hk_order_product_category_pk, update_ts);
CREATE INDEX l_order_user_order_idx ON dds.l_order_user (h_order_pk);
CREATE INDEX l_order_product_order_idx ON dds.l_order_product (h_order_pk);
CREATE INDEX l_order_product_category_order_idx ON dds.l_order_product_category (h_order_pk);
