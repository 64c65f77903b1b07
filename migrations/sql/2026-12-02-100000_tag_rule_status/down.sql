DROP VIEW IF EXISTS cdm.v_tag_rule_status;
