-- BI-friendly views over the warehouse (docs/bi.md): what a BI tool (Metabase, Superset,
-- Datalens) or an analyst points at, instead of the Data Vault's hubs, links and satellites.
--
-- A schema of its own, `bi`, and views only (nothing stored, nothing updated):
--   * a BI user gets exactly one grant: USAGE on `bi` and SELECT on its views (docs/bi.md). The
--     views run with their owner's privileges, so that user needs, and gets, nothing on stg,
--     dds or cdm;
--   * the service roles (migrations/src/roles.rs) are granted and revoked per layer schema
--     (stg, dds, cdm, ops) and never touch `bi`; views placed in `cdm` would have been granted
--     INSERT/UPDATE/DELETE to the cdm service role (simple views are auto-updatable);
--   * no role is created here: roles are cluster-wide, a migration runs per database and,
--     under `vaultctl migrate`, without CREATEROLE.
--
-- Conventions, in every view:
--   h_<entity>_pk   the Data Vault hash key (uuid), as in dds;
--   <entity>_id     the source's id (24 hex characters; the order id is a bigint), as in the
--                   dds hubs. (In cdm, user_id/product_id/category_id are hash keys; here
--                   they are renamed h_*_pk.)
--   valid_from      the source version (`update_ts`) that made the row current;
--   valid_to        the source version that replaced it, NULL while it is current (NULL, not
--                   'infinity': BI drivers and dataframes do not all read 'infinity'). A row
--                   is in effect at t when valid_from <= t AND (valid_to IS NULL OR t < valid_to);
--   is_current      valid_to IS NULL: exactly one row per key.
-- "Current" is the latest source version, ties broken by load time (contract §3.2.1, the same
-- order as dds.v_order_latest_status), whatever order the rows were loaded in.

CREATE SCHEMA IF NOT EXISTS bi;
COMMENT ON SCHEMA bi IS
    'Read-only views for BI tools over the Vaultline warehouse (docs/bi.md). Grant a BI role USAGE on this schema and SELECT on its views; it needs nothing on stg, dds or cdm.';

-- The hub key of a business key (contract §3.1), so that a BI filter on a source id can use
-- the hash keys' indexes: WHERE h_order_pk = bi.hash_key('2301365').
CREATE FUNCTION bi.hash_key(business_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(
        set_byte(set_byte(d, 6, (get_byte(d, 6) & 15) | 48), 8, (get_byte(d, 8) & 63) | 128),
        'hex')::uuid
    FROM (SELECT decode(md5(decode('6ba7b8149dad11d180b400c04fd430c8', 'hex')
                             || convert_to(business_key, 'UTF8')), 'hex') AS d) AS digest
$$;
COMMENT ON FUNCTION bi.hash_key(text) IS
    'Data Vault hub key (UUID v3, X.500 namespace) of a business key: an order id as text, a source user/product/restaurant id, or a category name (contract §3.1).';

-- ---------------------------------------------------------------- satellite history views
-- One per satellite: its columns, plus valid_from / valid_to / is_current from LEAD over the
-- hub key in (update_ts, load_dt) order.

CREATE VIEW bi.user_names_history AS
SELECT s.h_user_pk, h.user_id, s.username, s.userlogin, s.hk_user_names_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_user_names s
      WINDOW w AS (PARTITION BY s.h_user_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_user h ON h.h_user_pk = s.h_user_pk;

CREATE VIEW bi.product_names_history AS
SELECT s.h_product_pk, h.product_id, s.name AS product_name, s.hk_product_names_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_product_names s
      WINDOW w AS (PARTITION BY s.h_product_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_product h ON h.h_product_pk = s.h_product_pk;

CREATE VIEW bi.restaurant_names_history AS
SELECT s.h_restaurant_pk, h.restaurant_id, s.name AS restaurant_name, s.hk_restaurant_names_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_restaurant_names s
      WINDOW w AS (PARTITION BY s.h_restaurant_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_restaurant h ON h.h_restaurant_pk = s.h_restaurant_pk;

CREATE VIEW bi.order_cost_history AS
SELECT s.h_order_pk, h.order_id, s.cost, s.payment, s.hk_order_cost_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_cost s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

CREATE VIEW bi.order_status_history AS
SELECT s.h_order_pk, h.order_id, s.status, s.hk_order_status_hashdiff,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to
      FROM dds.s_order_status s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

-- Record-tracking satellite: one row per applied order version.
CREATE VIEW bi.order_version_history AS
SELECT s.h_order_pk, h.order_id,
       s.valid_from, s.valid_to, s.valid_to IS NULL AS is_current,
       s.version_no,
       s.update_ts, s.load_dt, s.load_src
FROM (SELECT s.*, s.update_ts AS valid_from,
             lead(s.update_ts) OVER w AS valid_to, row_number() OVER w AS version_no
      FROM dds.s_order_version s
      WINDOW w AS (PARTITION BY s.h_order_pk ORDER BY s.update_ts, s.load_dt)) s
LEFT JOIN dds.h_order h ON h.h_order_pk = s.h_order_pk;

-- Effectivity satellite of l_order_product_category, driving key the order: one row per order
-- line (dish, under its category) per order version in which it is in effect; the interval
-- is that version's (until the order's next version, whether or not the line is in it too).
CREATE VIEW bi.order_line_history AS
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

-- ---------------------------------------------------------------- current-state dimensions
-- Hubs with the current row of each satellite: the history views' is_current rows, so that
-- "current" is defined once. Set-based (one pass over each satellite, hash joins), because BI
-- tools mostly scan and aggregate; a filter on a hash key (h_*_pk) is pushed down into the
-- window, so looking up one key reads only that key's history.

CREATE VIEW bi.dim_user AS
SELECT h.h_user_pk, h.user_id, n.username, n.userlogin,
       n.valid_from, h.load_dt AS first_loaded_at
FROM dds.h_user h
LEFT JOIN bi.user_names_history n ON n.h_user_pk = h.h_user_pk AND n.is_current;

CREATE VIEW bi.dim_restaurant AS
SELECT h.h_restaurant_pk, h.restaurant_id, n.restaurant_name,
       n.valid_from, h.load_dt AS first_loaded_at
FROM dds.h_restaurant h
LEFT JOIN bi.restaurant_names_history n
  ON n.h_restaurant_pk = h.h_restaurant_pk AND n.is_current;

CREATE VIEW bi.dim_category AS
SELECT h.h_category_pk, h.category_name, h.load_dt AS first_loaded_at
FROM dds.h_category h;

-- A dish's current category: the one it had in the latest order version (by update_ts, then
-- load time) that contained it, i.e. what the menu said when that version was enriched. Its
-- restaurant: l_product_restaurant (a dish is on one restaurant's menu; the latest link wins).
CREATE VIEW bi.dim_product AS
SELECT h.h_product_pk, h.product_id, n.product_name,
       c.h_category_pk, hc.category_name,
       r.h_restaurant_pk, hr.restaurant_id,
       n.valid_from, h.load_dt AS first_loaded_at
FROM dds.h_product h
LEFT JOIN bi.product_names_history n ON n.h_product_pk = h.h_product_pk AND n.is_current
LEFT JOIN (
    SELECT DISTINCT ON (l.h_product_pk) l.h_product_pk, l.h_category_pk
    FROM dds.l_order_product_category l
    JOIN dds.s_order_product_category_effectivity e
      ON e.hk_order_product_category_pk = l.hk_order_product_category_pk
    ORDER BY l.h_product_pk, e.update_ts DESC, e.load_dt DESC, l.h_category_pk) c
  ON c.h_product_pk = h.h_product_pk
LEFT JOIN dds.h_category hc ON hc.h_category_pk = c.h_category_pk
LEFT JOIN (
    SELECT DISTINCT ON (pr.h_product_pk) pr.h_product_pk, pr.h_restaurant_pk
    FROM dds.l_product_restaurant pr
    ORDER BY pr.h_product_pk, pr.load_dt DESC, pr.h_restaurant_pk) r
  ON r.h_product_pk = h.h_product_pk
LEFT JOIN dds.h_restaurant hr ON hr.h_restaurant_pk = r.h_restaurant_pk;

-- One row per order: its user, its current status and cost, its latest version.
CREATE VIEW bi.fact_order AS
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

-- Orders per UTC day and current status, with their current cost and payment.
CREATE VIEW bi.fact_orders_daily AS
SELECT order_date, status,
       count(*) AS orders,
       count(DISTINCT h_user_pk) AS users,
       sum(cost) AS cost,
       sum(payment) AS payment
FROM bi.fact_order
GROUP BY order_date, status;

-- ---------------------------------------------------------------- datamarts and tags
-- Counter rows with order_cnt > 0 (a counter that fell back to 0 stays in cdm as a row; the
-- read API does not show it either).

CREATE VIEW bi.user_product_counters AS
SELECT c.user_id AS h_user_pk, u.user_id, u.username, u.userlogin,
       c.product_id AS h_product_pk, hp.product_id, c.product_name,
       c.order_cnt, c.updated_at
FROM cdm.user_product_counters c
LEFT JOIN bi.dim_user u ON u.h_user_pk = c.user_id
LEFT JOIN dds.h_product hp ON hp.h_product_pk = c.product_id
WHERE c.order_cnt > 0;

CREATE VIEW bi.user_category_counters AS
SELECT c.user_id AS h_user_pk, u.user_id, u.username, u.userlogin,
       c.category_id AS h_category_pk, c.category_name,
       c.order_cnt, c.updated_at
FROM cdm.user_category_counters c
LEFT JOIN bi.dim_user u ON u.h_user_pk = c.user_id
WHERE c.order_cnt > 0;

CREATE VIEW bi.tag_rules AS
SELECT r.tag, r.scope, r.target,
       CASE r.scope WHEN 'product' THEN pn.product_name ELSE r.target END AS target_name,
       r.threshold, r.description, r.enabled, r.updated_at,
       coalesce(n.holders, 0) AS holders
FROM cdm.tag_rules r
LEFT JOIN (SELECT tag, count(*) AS holders FROM cdm.user_tags GROUP BY tag) n ON n.tag = r.tag
LEFT JOIN dds.h_product hp ON r.scope = 'product' AND hp.product_id = r.target
LEFT JOIN bi.product_names_history pn ON pn.h_product_pk = hp.h_product_pk AND pn.is_current;

CREATE VIEW bi.user_tags AS
SELECT t.user_id AS h_user_pk, u.user_id, u.username, u.userlogin,
       t.tag, r.scope, r.target, r.threshold,
       t.order_cnt, t.granted_at, t.updated_at
FROM cdm.user_tags t
LEFT JOIN cdm.tag_rules r ON r.tag = t.tag
LEFT JOIN bi.dim_user u ON u.h_user_pk = t.user_id;

CREATE VIEW bi.user_tag_events AS
SELECT e.event_id, e.user_id AS h_user_pk, hu.user_id, e.tag, e.event, e.seq,
       e.order_cnt, e.at, e.published_at
FROM cdm.user_tag_events e
LEFT JOIN dds.h_user hu ON hu.h_user_pk = e.user_id;

-- ---------------------------------------------------------------- comments (BI tools show them)

COMMENT ON VIEW bi.user_names_history IS
    'History of dds.s_user_names: one row per user name/login version; valid_from/valid_to by source version (update_ts), valid_to NULL for the current row.';
COMMENT ON VIEW bi.product_names_history IS
    'History of dds.s_product_names: one row per dish name version; valid_to NULL for the current row.';
COMMENT ON VIEW bi.restaurant_names_history IS
    'History of dds.s_restaurant_names: one row per restaurant name version; valid_to NULL for the current row.';
COMMENT ON VIEW bi.order_cost_history IS
    'History of dds.s_order_cost: one row per (cost, payment) version of an order; valid_to NULL for the current row.';
COMMENT ON VIEW bi.order_status_history IS
    'History of dds.s_order_status: one row per status change of an order; the current row has the latest update_ts (contract §3.2.1).';
COMMENT ON VIEW bi.order_version_history IS
    'dds.s_order_version: one row per applied order version (update_ts); the current row is the order''s latest version.';
COMMENT ON VIEW bi.order_line_history IS
    'Effectivity of dds.l_order_product_category: one row per order line (dish under its category) per order version it is in; is_current = the line belongs to the order''s latest version.';
COMMENT ON VIEW bi.dim_user IS 'Users (dds.h_user) with their current name and login. One row per user.';
COMMENT ON VIEW bi.dim_restaurant IS 'Restaurants (dds.h_restaurant) with their current name. One row per restaurant.';
COMMENT ON VIEW bi.dim_category IS 'Dish categories (dds.h_category); the empty string is a real category. One row per category.';
COMMENT ON VIEW bi.dim_product IS
    'Dishes (dds.h_product) with their current name, current category (the one of the latest order version containing the dish) and restaurant. One row per dish.';
COMMENT ON VIEW bi.fact_order IS
    'Orders (dds.h_order) with user, current status, current cost and payment, and latest version. One row per order.';
COMMENT ON VIEW bi.fact_orders_daily IS
    'Orders per UTC day (of order_dt) and current status: count, distinct users, sums of current cost and payment. Revenue = payment where status = ''CLOSED''.';
COMMENT ON VIEW bi.user_product_counters IS
    'cdm.user_product_counters with user and dish source ids and names: per user and dish, the number of distinct orders whose latest status is CLOSED (contract §3.3). Only order_cnt > 0.';
COMMENT ON VIEW bi.user_category_counters IS
    'cdm.user_category_counters with user source id and name: per user and category, the number of distinct CLOSED orders with a dish of that category (contract §3.3). Only order_cnt > 0.';
COMMENT ON VIEW bi.tag_rules IS 'cdm.tag_rules (contract §6.1) with the number of current holders of each tag.';
COMMENT ON VIEW bi.user_tags IS
    'Tag holders (cdm.user_tags, contract §6.2) with user source id and name and the rule behind the tag. One row per (user, tag).';
COMMENT ON VIEW bi.user_tag_events IS
    'Every grant and revoke of a tag (cdm.user_tag_events, contract §6.3), with the user''s source id. One row per event.';

DO $$
DECLARE
    c record;
BEGIN
    -- Column comments: the same column means the same in every bi view.
    FOR c IN
        SELECT a.attrelid::regclass AS rel, a.attname, d.text
        FROM pg_attribute a
        JOIN pg_class r ON r.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = r.relnamespace AND n.nspname = 'bi'
        JOIN (VALUES
            ('h_user_pk', 'User hash key (uuid, = dds.h_user.h_user_pk and the user_id of cdm tables).'),
            ('user_id', 'User id in the source (24 hex characters).'),
            ('username', 'User''s current name.'),
            ('userlogin', 'User''s current login.'),
            ('h_product_pk', 'Dish hash key (uuid, = dds.h_product.h_product_pk).'),
            ('product_id', 'Dish id in the source menu (24 hex characters).'),
            ('product_name', 'Dish name.'),
            ('h_category_pk', 'Category hash key (uuid, = dds.h_category.h_category_pk).'),
            ('category_name', 'Category name as in the menus (the empty string is a category).'),
            ('h_restaurant_pk', 'Restaurant hash key (uuid).'),
            ('restaurant_id', 'Restaurant id in the source (24 hex characters).'),
            ('restaurant_name', 'Restaurant name.'),
            ('h_order_pk', 'Order hash key (uuid).'),
            ('order_id', 'Order id in the source.'),
            ('order_dt', 'When the order was placed.'),
            ('order_date', 'The UTC day the order was placed.'),
            ('status', 'Order status: OPEN, COOKING, DELIVERING, CLOSED or CANCELLED.'),
            ('cost', 'Order cost.'),
            ('payment', 'Amount paid.'),
            ('valid_from', 'Source version (update_ts) from which this row is in effect.'),
            ('valid_to', 'Source version that replaced this row; NULL while the row is current.'),
            ('is_current', 'True for the current row of the key (valid_to IS NULL); exactly one per key.'),
            ('version_no', 'The order version''s number, 1 for the first applied.'),
            ('update_ts', 'The order version (source update_ts) the row came from.'),
            ('load_dt', 'When the warehouse loaded the row.'),
            ('load_src', 'Where the row was loaded from (source topic).'),
            ('first_loaded_at', 'When the warehouse first saw this key.'),
            ('order_cnt', 'Distinct orders whose latest status is CLOSED that count for this row (contract §3.3).'),
            ('tag', 'Tag name (cdm.tag_rules.tag).'),
            ('scope', 'What the rule counts: category or product.'),
            ('target', 'The category name, or the dish source id, the rule counts.'),
            ('threshold', 'Counted orders that earn the tag.'),
            ('granted_at', 'When the user got the tag.'),
            ('holders', 'Users holding the tag now.'),
            ('event', 'granted or revoked.'),
            ('at', 'When the grant or revoke happened.'),
            ('orders', 'Number of orders.'),
            ('users', 'Number of distinct users.'),
            ('updated_at', 'When the row last changed.'),
            ('published_at', 'When the event was published to the user_tags topic; NULL until then.'),
            ('description', 'What the tag means.'),
            ('enabled', 'Whether the rule grants its tag.'),
            ('hk_order_product_category_pk', 'Key of the order line link dds.l_order_product_category.'),
            ('hashdiff', 'Hash of the satellite row''s descriptive columns (contract §3.1).')
        ) AS d(name, text)
          ON d.name = a.attname OR (d.name = 'hashdiff' AND a.attname LIKE 'hk\_%\_hashdiff')
        WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind = 'v'
    LOOP
        EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', c.rel, c.attname, c.text);
    END LOOP;
END;
$$;
COMMENT ON COLUMN bi.fact_orders_daily.cost IS 'Sum of the orders'' current cost.';
COMMENT ON COLUMN bi.fact_orders_daily.payment IS 'Sum of the orders'' current payment (revenue, for CLOSED).';
COMMENT ON COLUMN bi.fact_order.versions IS 'Number of applied versions of the order.';
COMMENT ON COLUMN bi.fact_order.version_update_ts IS 'The order''s latest applied version (update_ts).';
COMMENT ON COLUMN bi.fact_order.status_valid_from IS 'The version (update_ts) at which the current status began.';
COMMENT ON COLUMN bi.tag_rules.target_name IS 'The category name, or the dish''s current name for a product rule.';
COMMENT ON COLUMN bi.user_tag_events.event_id IS 'Deterministic event id (the object_id of the user_tags message).';
COMMENT ON COLUMN bi.user_tag_events.seq IS 'The n-th change of this user''s tag, from 1; grants odd, revokes even.';
