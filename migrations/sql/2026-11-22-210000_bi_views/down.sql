-- Views only: nothing stored is lost. Explicit names, and the schema
-- without CASCADE, so that an object someone else added to `bi` stops the down migration
-- instead of vanishing with it.
DROP VIEW IF EXISTS bi.user_tag_events;
DROP VIEW IF EXISTS bi.user_tags;
DROP VIEW IF EXISTS bi.tag_rules;
DROP VIEW IF EXISTS bi.user_category_counters;
DROP VIEW IF EXISTS bi.user_product_counters;
DROP VIEW IF EXISTS bi.fact_orders_daily;
DROP VIEW IF EXISTS bi.fact_order;
DROP VIEW IF EXISTS bi.dim_product;
DROP VIEW IF EXISTS bi.dim_category;
DROP VIEW IF EXISTS bi.dim_restaurant;
DROP VIEW IF EXISTS bi.dim_user;
DROP VIEW IF EXISTS bi.order_line_history;
DROP VIEW IF EXISTS bi.order_version_history;
DROP VIEW IF EXISTS bi.order_status_history;
DROP VIEW IF EXISTS bi.order_cost_history;
DROP VIEW IF EXISTS bi.restaurant_names_history;
DROP VIEW IF EXISTS bi.product_names_history;
DROP VIEW IF EXISTS bi.user_names_history;
DROP FUNCTION IF EXISTS bi.hash_key(text);
DROP SCHEMA IF EXISTS bi;
