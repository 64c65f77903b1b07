-- User tags, the read side (docs/contract.md §6): rules as data, the tags they grant, and the
-- grant/revoke events as a transactional outbox.
--
--   cdm.tag_rules          one row per tag; edited by people (SQL or `vaultctl tags apply`);
--   cdm.tag_rules_applied  the rules as cdm.user_tags currently reflects them: service-cdm
--                          compares the two every second and recomputes a changed rule's users
--                          in short chunks, then records the rule here;
--   cdm.user_tags          who holds which tag now (a user holds a tag exactly while the rule's
--                          counter for that user is at or above its threshold);
--   cdm.user_tag_events    every grant and revoke, written in the transaction that made it and
--                          published to the `user_tags` topic from here (at least once, with
--                          the deterministic `event_id`).
--
-- Who writes what, and why the two writers never disagree (docs/architecture.md, "Tags"):
-- the datamart step takes `SHARE` on cdm.tag_rules before it reads the rules, so a rule edit
-- (ROW EXCLUSIVE) waits for batches in flight and later batches see the new rule; each chunk
-- of a recompute takes `SHARE ROW EXCLUSIVE`, so it runs between batches, never beside one.

CREATE TABLE IF NOT EXISTS cdm.tag_rules (
    tag         text        PRIMARY KEY CHECK (tag <> '' AND length(tag) <= 200),
    scope       text        NOT NULL CHECK (scope IN ('category', 'product')),
    -- The category name as in the menus (the empty string is a real category), or the
    -- product id as in the source (24 hex digits).
    target      text        NOT NULL,
    threshold   integer     NOT NULL CHECK (threshold >= 1),
    description text        NOT NULL DEFAULT '',
    enabled     boolean     NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tag_rules_product_target CHECK (scope <> 'product' OR target ~ '^[0-9a-fA-F]{24}$')
);

CREATE OR REPLACE FUNCTION cdm.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS touch_updated_at ON cdm.tag_rules;
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON cdm.tag_rules
    FOR EACH ROW EXECUTE FUNCTION cdm.touch_updated_at();

CREATE TABLE IF NOT EXISTS cdm.tag_rules_applied (
    tag        text        PRIMARY KEY,
    scope      text        NOT NULL,
    target     text        NOT NULL,
    threshold  integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- How long the last recompute of this rule took, and how many users it looked at.
    took_ms    bigint      NOT NULL DEFAULT 0,
    users      bigint      NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS cdm.user_tags (
    user_id    uuid        NOT NULL,
    tag        text        NOT NULL,
    order_cnt  integer     NOT NULL CHECK (order_cnt >= 1),
    granted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tag)
);
-- The holders of a tag in a stable order (the API pages by user_id).
CREATE INDEX IF NOT EXISTS user_tags_tag_user_idx ON cdm.user_tags (tag, user_id);

CREATE TABLE IF NOT EXISTS cdm.user_tag_events (
    id           bigserial   PRIMARY KEY,
    -- UUID v3 (X.500) over "<user_id>_<tag>_<seq>": the same change always has the same id.
    event_id     uuid        NOT NULL UNIQUE,
    user_id      uuid        NOT NULL,
    tag          text        NOT NULL,
    -- The n-th change of this user's tag, from 1; grants are odd, revokes even.
    seq          integer     NOT NULL CHECK (seq >= 1),
    event        text        NOT NULL CHECK (event IN ('granted', 'revoked')),
    order_cnt    integer     NOT NULL CHECK (order_cnt >= 0),
    at           timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    UNIQUE (user_id, tag, seq),
    CHECK ((event = 'granted') = (seq % 2 = 1))
);
CREATE INDEX IF NOT EXISTS user_tag_events_unpublished_idx
    ON cdm.user_tag_events (id) WHERE published_at IS NULL;

-- A rule's candidates are the users whose counter on its target reaches the threshold: found
-- by target, in user order, for the chunked recompute.
CREATE INDEX IF NOT EXISTS user_product_counters_product_user_idx
    ON cdm.user_product_counters (product_id, user_id);
CREATE INDEX IF NOT EXISTS user_category_counters_category_user_idx
    ON cdm.user_category_counters (category_id, user_id);
