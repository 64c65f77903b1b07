DROP INDEX IF EXISTS cdm.user_category_counters_category_user_idx;
DROP INDEX IF EXISTS cdm.user_product_counters_product_user_idx;
DROP TABLE IF EXISTS cdm.user_tag_events;
DROP TABLE IF EXISTS cdm.user_tags;
DROP TABLE IF EXISTS cdm.tag_rules_applied;
DROP TABLE IF EXISTS cdm.tag_rules;
DROP FUNCTION IF EXISTS cdm.touch_updated_at();
