-- Whether the tags reflect each tag rule, written once: the read API (`/api/v1/tags`),
-- `vaultctl tags list` and service-cdm's rule watcher all read this view.
--
-- A rule is applied when cdm.user_tags reflects it as it stands: an enabled rule once
-- cdm.tag_rules_applied records it with the same scope, target and threshold (the watcher
-- records it after the last chunk of its recompute); a disabled rule once nothing is recorded
-- for it. `holders` counts the users holding the tag now (evaluated only when selected).
CREATE OR REPLACE VIEW cdm.v_tag_rule_status AS
SELECT r.tag, r.scope, r.target, r.threshold, r.description, r.enabled, r.updated_at,
       (SELECT count(*) FROM cdm.user_tags t WHERE t.tag = r.tag) AS holders,
       CASE WHEN r.enabled
            THEN coalesce((a.scope, a.target, a.threshold) = (r.scope, r.target, r.threshold),
                          false)
            ELSE a.tag IS NULL END AS applied,
       a.applied_at, a.took_ms
FROM cdm.tag_rules r LEFT JOIN cdm.tag_rules_applied a USING (tag);
