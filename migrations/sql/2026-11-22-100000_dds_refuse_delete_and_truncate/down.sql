DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'dds' AND c.relkind IN ('r', 'p') AND c.relname ~ '^[hls]_'
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only_statement ON dds.%I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS insert_only_truncate ON dds.%I', t);
    END LOOP;
END;
$$;
DROP FUNCTION IF EXISTS dds.refuse_change();
