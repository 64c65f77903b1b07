-- Order effectivity (SPEC §3.3, clarified): which dishes, under which category, belong to
-- each order version, so that the recount over the Data Vault means what the counters mean.
--
-- `l_order_product` and `l_product_category` only say that a dish was once in an order and
-- once in a category. Two new insert-only tables say which applied when:
--   dds.s_order_version                          one row per applied order version (a
--       record-tracking satellite on h_order); the newest is the order's latest version,
--       even when that version lists no dish at all;
--   dds.l_order_product_category                 a link of three hubs: dish P was in order O
--       under category C (the category the restaurant's menu gave P when that order version
--       was enriched);
--   dds.s_order_product_category_effectivity     an effectivity satellite on that link, driving
--       key the order: one row per order version in which the link is in effect.
-- A dish a later version drops, or one that version files under another category, simply has
-- no effectivity row at that version. Nothing is ever updated.

CREATE TABLE IF NOT EXISTS dds.s_order_version (
    h_order_pk uuid        NOT NULL,
    update_ts  timestamptz NOT NULL,
    load_dt    timestamptz NOT NULL,
    load_src   text        NOT NULL,
    PRIMARY KEY (h_order_pk, update_ts)
);

-- Link key: UUID v3 (X.500) over "<h_order_pk>_<h_product_pk>_<h_category_pk>" (SPEC §3.1
-- extended to three hubs, in the column order of the table's name).
CREATE TABLE IF NOT EXISTS dds.l_order_product_category (
    hk_order_product_category_pk uuid PRIMARY KEY,
    h_order_pk                   uuid        NOT NULL,
    h_product_pk                 uuid        NOT NULL,
    h_category_pk                uuid        NOT NULL,
    load_dt                      timestamptz NOT NULL,
    load_src                     text        NOT NULL
);
CREATE INDEX IF NOT EXISTS l_order_product_category_order_idx
    ON dds.l_order_product_category (h_order_pk);

CREATE TABLE IF NOT EXISTS dds.s_order_product_category_effectivity (
    hk_order_product_category_pk uuid        NOT NULL,
    update_ts                    timestamptz NOT NULL,
    load_dt                      timestamptz NOT NULL,
    load_src                     text        NOT NULL,
    PRIMARY KEY (hk_order_product_category_pk, update_ts)
);

-- Insert-only, like the rest of the vault: UPDATE, DELETE and TRUNCATE are refused.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        's_order_version', 'l_order_product_category', 's_order_product_category_effectivity'
    ] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only ON dds.%I', t);
        EXECUTE format(
            'CREATE TRIGGER insert_only BEFORE UPDATE OR DELETE ON dds.%I '
            'FOR EACH ROW EXECUTE FUNCTION dds.refuse_update()', t);
        -- Statement-level as well, so that an UPDATE or DELETE matching no row is refused too
        -- (as for every other Data Vault table since 2026-11-22-100000).
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only_statement ON dds.%I', t);
        EXECUTE format(
            'CREATE TRIGGER insert_only_statement BEFORE UPDATE OR DELETE ON dds.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change()', t);
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only_truncate ON dds.%I', t);
        EXECUTE format(
            'CREATE TRIGGER insert_only_truncate BEFORE TRUNCATE ON dds.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change()', t);
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- backfill
-- Orders loaded before this migration get their latest version recorded once, so the
-- recount keeps covering them. The old vault cannot say which dishes a later version dropped
-- or which category a re-filed dish had in that order; where the datamart's own state for the
-- same version is there (cdm.order_state) it decides, otherwise every dish the order ever had
-- counts, under its most recently loaded category. Exact unless a dish was dropped or moved
-- between categories before the upgrade and the datamart had not yet applied that version.
CREATE FUNCTION pg_temp.uuid_v3_x500(name text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(
        set_byte(set_byte(d, 6, (get_byte(d, 6) & 15) | 48), 8, (get_byte(d, 8) & 63) | 128),
        'hex')::uuid
    FROM (SELECT decode(md5(decode('6ba7b8149dad11d180b400c04fd430c8', 'hex')
                             || convert_to(name, 'UTF8')), 'hex') AS d) AS digest
$$;

INSERT INTO dds.s_order_version (h_order_pk, update_ts, load_dt, load_src)
SELECT h_order_pk, update_ts, now(), 'migration 2026-11-22-162700'
FROM dds.order_load_state
ON CONFLICT DO NOTHING;

CREATE TEMPORARY TABLE backfill_lines AS
SELECT pg_temp.uuid_v3_x500(h_order_pk::text || '_' || h_product_pk::text || '_'
                            || h_category_pk::text) AS hk,
       h_order_pk, h_product_pk, h_category_pk, update_ts
FROM (SELECT ols.h_order_pk, op.h_product_pk, ols.update_ts,
             (SELECT pc.h_category_pk FROM dds.l_product_category pc
              WHERE pc.h_product_pk = op.h_product_pk
              ORDER BY (pc.h_category_pk = ANY (coalesce(cs.category_ids, '{}'))) DESC,
                       pc.load_dt DESC, pc.h_category_pk
              LIMIT 1) AS h_category_pk
      FROM dds.order_load_state ols
      JOIN dds.l_order_product op ON op.h_order_pk = ols.h_order_pk
      LEFT JOIN cdm.order_state cs
        ON cs.order_id = ols.h_order_pk AND cs.update_ts = ols.update_ts
      WHERE cs.order_id IS NULL OR op.h_product_pk = ANY (cs.product_ids)) lines
WHERE h_category_pk IS NOT NULL;

INSERT INTO dds.l_order_product_category
    (hk_order_product_category_pk, h_order_pk, h_product_pk, h_category_pk, load_dt, load_src)
SELECT hk, h_order_pk, h_product_pk, h_category_pk, now(), 'migration 2026-11-22-162700'
FROM backfill_lines
ON CONFLICT DO NOTHING;

INSERT INTO dds.s_order_product_category_effectivity
    (hk_order_product_category_pk, update_ts, load_dt, load_src)
SELECT hk, update_ts, now(), 'migration 2026-11-22-162700'
FROM backfill_lines
ON CONFLICT DO NOTHING;

DROP TABLE backfill_lines;
DROP FUNCTION pg_temp.uuid_v3_x500(text);

-- ---------------------------------------------------------------- the recount (SPEC §3.3)
-- Written once, here; the datamarts, `vaultctl verify`, scripts/run.sh and the tests all
-- compare against these views.

-- Each order's latest applied version and that version's status. Versions are applied in
-- update_ts order only (the loader's gate), and a status row is written only when the status
-- changes, so the newest status row is the status of the newest version.
CREATE OR REPLACE VIEW dds.v_order_latest_version AS
SELECT v.h_order_pk, v.update_ts, s.status, ou.h_user_pk
FROM (SELECT h_order_pk, max(update_ts) AS update_ts
      FROM dds.s_order_version GROUP BY h_order_pk) v
JOIN dds.v_order_latest_status s ON s.h_order_pk = v.h_order_pk
JOIN dds.l_order_user ou ON ou.h_order_pk = v.h_order_pk;

-- The dishes of each order's latest version, each under the category it had in that version.
CREATE OR REPLACE VIEW dds.v_order_latest_lines AS
SELECT v.h_order_pk, v.h_user_pk, v.update_ts, v.status, l.h_product_pk, l.h_category_pk,
       l.hk_order_product_category_pk
FROM dds.v_order_latest_version v
JOIN dds.l_order_product_category l ON l.h_order_pk = v.h_order_pk
JOIN dds.s_order_product_category_effectivity e
  ON e.hk_order_product_category_pk = l.hk_order_product_category_pk
 AND e.update_ts = v.update_ts;

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

-- Every counter that differs from its recount, both directions (a counter row of 0 and no
-- recount row agree). Empty when the datamarts are exact.
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
