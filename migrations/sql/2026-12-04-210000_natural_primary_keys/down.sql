-- Back to 2026-12-03-130000: the surrogate keys return, numbered in the rows' physical order.
-- Their sequences are new: run `vaultctl migrate` (it grants the services' roles USAGE on
-- them) before starting service-stg and service-cdm again.

ALTER TABLE stg.order_events ADD CONSTRAINT order_events_object_id_key UNIQUE (object_id);
ALTER TABLE stg.order_events DROP CONSTRAINT order_events_pkey;
ALTER TABLE stg.order_events ADD COLUMN id bigserial PRIMARY KEY;

ALTER TABLE cdm.user_product_counters
    ADD CONSTRAINT user_product_counters_user_id_product_id_key UNIQUE (user_id, product_id);
ALTER TABLE cdm.user_product_counters DROP CONSTRAINT user_product_counters_pkey;
ALTER TABLE cdm.user_product_counters ADD COLUMN id bigserial PRIMARY KEY;

ALTER TABLE cdm.user_category_counters
    ADD CONSTRAINT user_category_counters_user_id_category_id_key UNIQUE (user_id, category_id);
ALTER TABLE cdm.user_category_counters DROP CONSTRAINT user_category_counters_pkey;
ALTER TABLE cdm.user_category_counters ADD COLUMN id bigserial PRIMARY KEY;
