-- Hubs, links and satellites are insert-only. The first migration refuses an UPDATE of a row;
-- a DELETE or a TRUNCATE loses history just as silently, so refuse those too. These triggers
-- fire once per statement, so a statement is refused even when it matches no row (a DELETE
-- that happens to find nothing today is still a bug), and an UPDATE is refused the same way.
CREATE OR REPLACE FUNCTION dds.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dds.% is insert-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$;

-- Every hub (h_), link (l_) and satellite (s_) of the Data Vault that exists at this point.
-- A later migration that adds one must give it the same triggers.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'dds' AND c.relkind IN ('r', 'p') AND c.relname ~ '^[hls]_'
    LOOP
        EXECUTE format(
            'CREATE TRIGGER insert_only_statement BEFORE UPDATE OR DELETE ON dds.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change()', t);
        EXECUTE format(
            'CREATE TRIGGER insert_only_truncate BEFORE TRUNCATE ON dds.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION dds.refuse_change()', t);
    END LOOP;
END;
$$;
