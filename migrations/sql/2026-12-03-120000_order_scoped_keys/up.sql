-- Order-scoped links and satellites keyed by the order id (docs/contract.md §3.2, "Order-scoped
-- tables"; docs/performance.md, "Cost as the warehouse grows").
--
-- An order's links and satellites were keyed by hash keys alone, so every row a load added or
-- looked up touched a random page of an index as large as the history: on a warehouse of
-- 5 million orders those pages no longer stayed in memory, each one cost a read, and after
-- each checkpoint a full page image in the WAL (the drain fell from 3,671 to 853 orders/s).
-- Each of these tables now carries its order's id and its key leads with it. Source systems
-- number orders as they come, so a load's entries land in the newest pages of each index,
-- whatever the history. Uniqueness is unchanged: an order's hash key is a function of its id,
-- so (order id, key) is unique exactly where the key was. The lookups by order (a satellite's
-- current row, the point-in-time recount below) go by the id, and the separate indexes on
-- h_order_pk, which cost one more random entry per row, are gone. The hub, the load state
-- (the gate) and dds.pit_order keep their hash keys: one entry per order each.

-- The old keys first, so that filling the new column does not maintain them.
ALTER TABLE dds.l_order_user DROP CONSTRAINT l_order_user_pkey;
ALTER TABLE dds.l_order_product DROP CONSTRAINT l_order_product_pkey;
ALTER TABLE dds.l_order_product_category DROP CONSTRAINT l_order_product_category_pkey;
ALTER TABLE dds.s_order_cost DROP CONSTRAINT s_order_cost_pkey;
ALTER TABLE dds.s_order_status DROP CONSTRAINT s_order_status_pkey;
ALTER TABLE dds.s_order_version DROP CONSTRAINT s_order_version_pkey;
ALTER TABLE dds.s_order_user_effectivity DROP CONSTRAINT s_order_user_effectivity_pkey;
ALTER TABLE dds.s_order_product_category_effectivity
    DROP CONSTRAINT s_order_product_category_effectivity_pkey;
DROP INDEX dds.l_order_user_order_idx;
DROP INDEX dds.l_order_product_order_idx;
DROP INDEX dds.l_order_product_category_order_idx;

-- The rows loaded before get their order's id, from the hub (the effectivity rows from their
-- link). The vault refuses updates; this one migration fills a new column.
DO $$
DECLARE
    t text;
    missing bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'l_order_user', 'l_order_product', 'l_order_product_category', 's_order_cost',
        's_order_status', 's_order_version', 's_order_user_effectivity',
        's_order_product_category_effectivity'
    ] LOOP
        EXECUTE format('ALTER TABLE dds.%I ADD COLUMN order_id bigint', t);
        EXECUTE format('ALTER TABLE dds.%I DISABLE TRIGGER USER', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY[
        'l_order_user', 'l_order_product', 'l_order_product_category', 's_order_cost',
        's_order_status', 's_order_version'
    ] LOOP
        EXECUTE format('UPDATE dds.%I t SET order_id = h.order_id FROM dds.h_order h '
                       'WHERE h.h_order_pk = t.h_order_pk', t);
    END LOOP;
    UPDATE dds.s_order_user_effectivity e SET order_id = l.order_id
    FROM dds.l_order_user l WHERE l.hk_order_user_pk = e.hk_order_user_pk;
    UPDATE dds.s_order_product_category_effectivity e SET order_id = l.order_id
    FROM dds.l_order_product_category l
    WHERE l.hk_order_product_category_pk = e.hk_order_product_category_pk;
    FOREACH t IN ARRAY ARRAY[
        'l_order_user', 'l_order_product', 'l_order_product_category', 's_order_cost',
        's_order_status', 's_order_version', 's_order_user_effectivity',
        's_order_product_category_effectivity'
    ] LOOP
        EXECUTE format('SELECT count(*) FROM dds.%I WHERE order_id IS NULL', t) INTO missing;
        IF missing > 0 THEN
            RAISE EXCEPTION 'dds.% has % row(s) whose order is not in dds.h_order', t, missing
                USING HINT = 'Every link and satellite of an order needs its hub row; '
                             'load the order (or restore dds.h_order) and migrate again.';
        END IF;
        EXECUTE format('ALTER TABLE dds.%I ALTER COLUMN order_id SET NOT NULL', t);
        EXECUTE format('ALTER TABLE dds.%I ENABLE TRIGGER USER', t);
    END LOOP;
END;
$$;

ALTER TABLE dds.l_order_user ADD PRIMARY KEY (order_id, hk_order_user_pk);
ALTER TABLE dds.l_order_product ADD PRIMARY KEY (order_id, hk_order_product_pk);
ALTER TABLE dds.l_order_product_category
    ADD PRIMARY KEY (order_id, hk_order_product_category_pk);
ALTER TABLE dds.s_order_cost ADD PRIMARY KEY (order_id, load_dt);
ALTER TABLE dds.s_order_status ADD PRIMARY KEY (order_id, load_dt);
ALTER TABLE dds.s_order_version ADD PRIMARY KEY (order_id, update_ts);
ALTER TABLE dds.s_order_user_effectivity ADD PRIMARY KEY (order_id, hk_order_user_pk, update_ts);
ALTER TABLE dds.s_order_product_category_effectivity
    ADD PRIMARY KEY (order_id, hk_order_product_category_pk, update_ts);

-- The point in time of some orders from the history, looked up by their ids (NULL: every
-- order). Same rows as dds.pit_order_recount(orders uuid[]) of 2026-12-03-010000, which now
-- reads this.
CREATE FUNCTION dds.pit_order_recount_by_id(ids bigint[])
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
               JOIN dds.s_order_user_effectivity e
                 ON e.order_id = ou.order_id AND e.hk_order_user_pk = ou.hk_order_user_pk
               WHERE ids IS NULL OR ou.order_id = ANY (ids)) lu
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

-- By hash key, as before (dds.v_pit_order_recount reads it with NULL).
CREATE OR REPLACE FUNCTION dds.pit_order_recount(orders uuid[])
RETURNS TABLE (h_order_pk uuid, order_id bigint, order_dt timestamptz, h_user_pk uuid,
               status text, status_valid_from timestamptz, cost numeric(19, 5),
               payment numeric(19, 5), version_update_ts timestamptz, versions bigint,
               first_loaded_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT * FROM dds.pit_order_recount_by_id(
        CASE WHEN orders IS NULL THEN NULL::bigint[]
             ELSE ARRAY(SELECT h.order_id FROM dds.h_order h WHERE h.h_order_pk = ANY (orders))
        END)
$$;

-- Rewrites the point in time of `orders` (NULL: every order) from the history; returns the
-- rows it changed. The orders' ids are read first, so the recount is planned with them as
-- constants and looks each satellite up by them.
CREATE OR REPLACE FUNCTION dds.refresh_pit_order(orders uuid[]) RETURNS bigint LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    ids bigint[];
    rows bigint;
BEGIN
    IF orders IS NOT NULL THEN
        ids := ARRAY(SELECT h.order_id FROM dds.h_order h WHERE h.h_order_pk = ANY (orders));
    END IF;
    WITH changed AS (
        INSERT INTO dds.pit_order AS p
            (h_order_pk, order_id, order_dt, h_user_pk, status, status_valid_from, cost,
             payment, version_update_ts, versions, first_loaded_at)
        SELECT h_order_pk, order_id, order_dt, h_user_pk, status, status_valid_from, cost,
               payment, version_update_ts, versions, first_loaded_at
        FROM dds.pit_order_recount_by_id(ids)
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

-- The BI history views of an order's satellites read the order id from the satellite and
-- partition by it, so a filter on `order_id` is pushed down and reads that order's rows by
-- the key (a filter on `h_order_pk` is pushed down too, and reads the satellite through).
-- Same columns as 2026-11-22-210000_bi_views, so their comments and grants stay.
CREATE OR REPLACE VIEW bi.order_cost_history AS
SELECT s.h_order_pk, s.order_id, s.cost, s.payment, s.hk_order_cost_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_cost s
      WINDOW w AS (PARTITION BY s.order_id, s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s;

CREATE OR REPLACE VIEW bi.order_status_history AS
SELECT s.h_order_pk, s.order_id, s.status, s.hk_order_status_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_status s
      WINDOW w AS (PARTITION BY s.order_id, s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s;

CREATE OR REPLACE VIEW bi.order_version_history AS
SELECT s.h_order_pk, s.order_id,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.version_no,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to, row_number() OVER w AS version_no
      FROM dds.s_order_version s
      WINDOW w AS (PARTITION BY s.order_id, s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s;

CREATE OR REPLACE VIEW bi.order_line_history AS
SELECT l.hk_order_product_category_pk, l.h_order_pk, v.order_id,
       l.h_product_pk, p.product_id, l.h_category_pk, c.category_name,
       v.valid_from, v.valid_to, v.is_current, v.version_no,
       e.update_ts, e.load_dt, e.load_src
FROM dds.s_order_product_category_effectivity e
JOIN dds.l_order_product_category l
  ON l.order_id = e.order_id
 AND l.hk_order_product_category_pk = e.hk_order_product_category_pk
JOIN bi.order_version_history v ON v.order_id = l.order_id AND v.update_ts = e.update_ts
LEFT JOIN dds.h_product p ON p.h_product_pk = l.h_product_pk
LEFT JOIN dds.h_category c ON c.h_category_pk = l.h_category_pk;
