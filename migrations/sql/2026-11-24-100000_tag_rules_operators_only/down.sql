DROP TRIGGER IF EXISTS operators_only ON cdm.tag_rules;
DROP FUNCTION IF EXISTS cdm.refuse_rule_writes();
