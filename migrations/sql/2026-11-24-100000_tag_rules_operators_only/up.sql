-- Rules are changed by operators only (`vaultctl rules`, as the schema's owner or a superuser).
--
-- service-cdm's role must hold UPDATE on cdm.tag_rules: its datamart step and recompute lock
-- the table (`LOCK TABLE ... IN SHARE [ROW EXCLUSIVE] MODE`), and Postgres allows those lock
-- modes only with UPDATE, DELETE or TRUNCATE. It never writes a rule, so a write by any role
-- that is not (a member of) the table's owner is refused here, with the same SQLSTATE as a
-- missing privilege (docs/failures.md: a refused privilege is systemic, never a message fault).
CREATE OR REPLACE FUNCTION cdm.refuse_rule_writes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_has_role(current_user,
                       (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for table %: rules are changed by operators (vaultctl rules)',
            TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS operators_only ON cdm.tag_rules;
CREATE TRIGGER operators_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdm.tag_rules
    FOR EACH STATEMENT EXECUTE FUNCTION cdm.refuse_rule_writes();
