-- The Vaultline warehouse (SPEC §3): staging, Data Vault, datamarts, and the dead-letter store.
-- Every statement is idempotent, so applying this twice (even outside diesel's bookkeeping)
-- changes nothing.

CREATE SCHEMA IF NOT EXISTS stg;
CREATE SCHEMA IF NOT EXISTS dds;
CREATE SCHEMA IF NOT EXISTS cdm;
CREATE SCHEMA IF NOT EXISTS ops;

-- ---------------------------------------------------------------- staging
-- One row per order; a newer version (update_ts) replaces an older one, never the reverse.
CREATE TABLE IF NOT EXISTS stg.order_events (
    id          bigserial   PRIMARY KEY,
    object_id   bigint      NOT NULL UNIQUE,
    object_type text        NOT NULL,
    sent_dttm   timestamptz NOT NULL,
    update_ts   timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    load_dt     timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- Data Vault: hubs
CREATE TABLE IF NOT EXISTS dds.h_user (
    h_user_pk uuid PRIMARY KEY,
    user_id   text        NOT NULL,
    load_dt   timestamptz NOT NULL,
    load_src  text        NOT NULL
);
CREATE TABLE IF NOT EXISTS dds.h_product (
    h_product_pk uuid PRIMARY KEY,
    product_id   text        NOT NULL,
    load_dt      timestamptz NOT NULL,
    load_src     text        NOT NULL
);
CREATE TABLE IF NOT EXISTS dds.h_category (
    h_category_pk uuid PRIMARY KEY,
    category_name text        NOT NULL,
    load_dt       timestamptz NOT NULL,
    load_src      text        NOT NULL
);
CREATE TABLE IF NOT EXISTS dds.h_restaurant (
    h_restaurant_pk uuid PRIMARY KEY,
    restaurant_id   text        NOT NULL,
    load_dt         timestamptz NOT NULL,
    load_src        text        NOT NULL
);
CREATE TABLE IF NOT EXISTS dds.h_order (
    h_order_pk uuid PRIMARY KEY,
    order_id   bigint      NOT NULL,
    order_dt   timestamptz NOT NULL,
    load_dt    timestamptz NOT NULL,
    load_src   text        NOT NULL
);

-- ---------------------------------------------------------------- Data Vault: links
-- No foreign keys from links and satellites to hubs: the loader writes a version's hubs
-- before its links and satellites in the same transaction, so integrity holds by
-- construction, and per-row foreign-key checks were the most expensive part of a load.
CREATE TABLE IF NOT EXISTS dds.l_order_user (
    hk_order_user_pk uuid PRIMARY KEY,
    h_order_pk       uuid        NOT NULL,
    h_user_pk        uuid        NOT NULL,
    load_dt          timestamptz NOT NULL,
    load_src         text        NOT NULL
);
CREATE INDEX IF NOT EXISTS l_order_user_order_idx ON dds.l_order_user (h_order_pk);
CREATE TABLE IF NOT EXISTS dds.l_order_product (
    hk_order_product_pk uuid PRIMARY KEY,
    h_order_pk          uuid        NOT NULL,
    h_product_pk        uuid        NOT NULL,
    load_dt             timestamptz NOT NULL,
    load_src            text        NOT NULL
);
CREATE INDEX IF NOT EXISTS l_order_product_order_idx ON dds.l_order_product (h_order_pk);
CREATE TABLE IF NOT EXISTS dds.l_product_category (
    hk_product_category_pk uuid PRIMARY KEY,
    h_product_pk           uuid        NOT NULL,
    h_category_pk          uuid        NOT NULL,
    load_dt                timestamptz NOT NULL,
    load_src               text        NOT NULL
);
CREATE INDEX IF NOT EXISTS l_product_category_product_idx ON dds.l_product_category (h_product_pk);
CREATE TABLE IF NOT EXISTS dds.l_product_restaurant (
    hk_product_restaurant_pk uuid PRIMARY KEY,
    h_product_pk             uuid        NOT NULL,
    h_restaurant_pk          uuid        NOT NULL,
    load_dt                  timestamptz NOT NULL,
    load_src                 text        NOT NULL
);

-- ---------------------------------------------------------------- Data Vault: satellites
-- History-keeping: primary key (hub key, load_dt); a row is added only when the hashdiff
-- differs from the current row. `update_ts` is the order version the row came from.
CREATE TABLE IF NOT EXISTS dds.s_user_names (
    h_user_pk              uuid        NOT NULL,
    username               text        NOT NULL,
    userlogin              text        NOT NULL,
    hk_user_names_hashdiff uuid        NOT NULL,
    update_ts              timestamptz NOT NULL,
    load_dt                timestamptz NOT NULL,
    load_src               text        NOT NULL,
    PRIMARY KEY (h_user_pk, load_dt)
);
CREATE TABLE IF NOT EXISTS dds.s_product_names (
    h_product_pk              uuid        NOT NULL,
    name                      text        NOT NULL,
    hk_product_names_hashdiff uuid        NOT NULL,
    update_ts                 timestamptz NOT NULL,
    load_dt                   timestamptz NOT NULL,
    load_src                  text        NOT NULL,
    PRIMARY KEY (h_product_pk, load_dt)
);
CREATE TABLE IF NOT EXISTS dds.s_restaurant_names (
    h_restaurant_pk              uuid        NOT NULL,
    name                         text        NOT NULL,
    hk_restaurant_names_hashdiff uuid        NOT NULL,
    update_ts                    timestamptz NOT NULL,
    load_dt                      timestamptz NOT NULL,
    load_src                     text        NOT NULL,
    PRIMARY KEY (h_restaurant_pk, load_dt)
);
CREATE TABLE IF NOT EXISTS dds.s_order_cost (
    h_order_pk             uuid           NOT NULL,
    cost                   numeric(19, 5) NOT NULL,
    payment                numeric(19, 5) NOT NULL,
    hk_order_cost_hashdiff uuid           NOT NULL,
    update_ts              timestamptz    NOT NULL,
    load_dt                timestamptz    NOT NULL,
    load_src               text           NOT NULL,
    PRIMARY KEY (h_order_pk, load_dt)
);
CREATE TABLE IF NOT EXISTS dds.s_order_status (
    h_order_pk               uuid        NOT NULL,
    status                   text        NOT NULL,
    hk_order_status_hashdiff uuid        NOT NULL,
    update_ts                timestamptz NOT NULL,
    load_dt                  timestamptz NOT NULL,
    load_src                 text        NOT NULL,
    PRIMARY KEY (h_order_pk, load_dt)
);

-- The latest order version the Data Vault has applied: the gate that makes an older or
-- repeated version change nothing.
CREATE TABLE IF NOT EXISTS dds.order_load_state (
    h_order_pk uuid        PRIMARY KEY,
    order_id   bigint      NOT NULL,
    update_ts  timestamptz NOT NULL,
    load_dt    timestamptz NOT NULL
);

-- Hubs, links and satellites are insert-only: an UPDATE is a bug, so refuse it.
CREATE OR REPLACE FUNCTION dds.refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dds.% is insert-only', TG_TABLE_NAME;
END;
$$;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'h_user', 'h_product', 'h_category', 'h_restaurant', 'h_order',
        'l_order_user', 'l_order_product', 'l_product_category', 'l_product_restaurant',
        's_user_names', 's_product_names', 's_restaurant_names', 's_order_cost', 's_order_status'
    ] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only ON dds.%I', t);
        EXECUTE format(
            'CREATE TRIGGER insert_only BEFORE UPDATE ON dds.%I '
            'FOR EACH ROW EXECUTE FUNCTION dds.refuse_update()', t);
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- datamarts
CREATE TABLE IF NOT EXISTS cdm.user_product_counters (
    id           bigserial   PRIMARY KEY,
    user_id      uuid        NOT NULL,
    product_id   uuid        NOT NULL,
    product_name text        NOT NULL,
    order_cnt    integer     NOT NULL CHECK (order_cnt >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, product_id)
);
CREATE TABLE IF NOT EXISTS cdm.user_category_counters (
    id            bigserial   PRIMARY KEY,
    user_id       uuid        NOT NULL,
    category_id   uuid        NOT NULL,
    category_name text        NOT NULL,
    order_cnt     integer     NOT NULL CHECK (order_cnt >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, category_id)
);

-- What the datamart last applied per order and what that version counted: the state that
-- makes counting exact under duplicates, replays and reordering. `update_ts` is NULL only for
-- the instant between claiming a new order's row and applying its first version.
CREATE TABLE IF NOT EXISTS cdm.order_state (
    order_id     uuid        PRIMARY KEY,
    user_id      uuid,
    update_ts    timestamptz,
    counted      boolean     NOT NULL DEFAULT false,
    product_ids  uuid[]      NOT NULL DEFAULT '{}',
    category_ids uuid[]      NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Recounts from the Data Vault (SPEC §3.3): the datamarts must equal these.
CREATE OR REPLACE VIEW dds.v_order_latest_status AS
SELECT DISTINCT ON (h_order_pk) h_order_pk, status, update_ts
FROM dds.s_order_status
ORDER BY h_order_pk, update_ts DESC, load_dt DESC;

CREATE OR REPLACE VIEW cdm.v_user_product_recount AS
SELECT ou.h_user_pk AS user_id, op.h_product_pk AS product_id,
       count(DISTINCT s.h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_status s
JOIN dds.l_order_user ou ON ou.h_order_pk = s.h_order_pk
JOIN dds.l_order_product op ON op.h_order_pk = s.h_order_pk
WHERE s.status = 'CLOSED'
GROUP BY ou.h_user_pk, op.h_product_pk;

CREATE OR REPLACE VIEW cdm.v_user_category_recount AS
SELECT ou.h_user_pk AS user_id, pc.h_category_pk AS category_id,
       count(DISTINCT s.h_order_pk)::integer AS order_cnt
FROM dds.v_order_latest_status s
JOIN dds.l_order_user ou ON ou.h_order_pk = s.h_order_pk
JOIN dds.l_order_product op ON op.h_order_pk = s.h_order_pk
JOIN dds.l_product_category pc ON pc.h_product_pk = op.h_product_pk
WHERE s.status = 'CLOSED'
GROUP BY ou.h_user_pk, pc.h_category_pk;

-- ---------------------------------------------------------------- rejected messages
-- Every message a service could not process, with why and where it came from, so an
-- operator can see it and replay it once the cause is fixed. Keyed by its source position,
-- so a redelivered poison message is kept once.
CREATE TABLE IF NOT EXISTS ops.dead_letters (
    id          bigserial   PRIMARY KEY,
    service     text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    message_key bytea,
    payload     bytea       NOT NULL,
    error_kind  text        NOT NULL,
    reason      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    UNIQUE (service, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS dead_letters_pending_idx ON ops.dead_letters (service, id)
    WHERE replayed_at IS NULL;
