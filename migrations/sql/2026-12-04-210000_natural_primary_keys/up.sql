-- Natural primary keys for the staging table and the datamarts' counters.
--
-- Each of these tables had a surrogate `id bigserial` primary key that nothing reads, beside
-- the unique key the contract names (docs/contract.md §3.2.1): every new row drew a number
-- from a sequence and went into one more index. The natural key is the primary key now and
-- the surrogate is gone. Measured alone, 110,000 staging upserts in batches of 500 took
-- 0.57–0.81 s before and 0.39–0.58 s after, 250,000 counter upserts 4.9–5.9 s and 4.1–5.2 s
-- (docs/performance.md).
-- The new key's index is built once from the rows there (seconds on millions of rows).

ALTER TABLE stg.order_events DROP CONSTRAINT order_events_pkey;
ALTER TABLE stg.order_events DROP COLUMN id;
ALTER TABLE stg.order_events ADD CONSTRAINT order_events_pkey PRIMARY KEY (object_id);
ALTER TABLE stg.order_events DROP CONSTRAINT order_events_object_id_key;

ALTER TABLE cdm.user_product_counters DROP CONSTRAINT user_product_counters_pkey;
ALTER TABLE cdm.user_product_counters DROP COLUMN id;
ALTER TABLE cdm.user_product_counters
    ADD CONSTRAINT user_product_counters_pkey PRIMARY KEY (user_id, product_id);
ALTER TABLE cdm.user_product_counters
    DROP CONSTRAINT user_product_counters_user_id_product_id_key;

ALTER TABLE cdm.user_category_counters DROP CONSTRAINT user_category_counters_pkey;
ALTER TABLE cdm.user_category_counters DROP COLUMN id;
ALTER TABLE cdm.user_category_counters
    ADD CONSTRAINT user_category_counters_pkey PRIMARY KEY (user_id, category_id);
ALTER TABLE cdm.user_category_counters
    DROP CONSTRAINT user_category_counters_user_id_category_id_key;
