-- Retention: the housekeeper deletes old rows in small batches, so the rules' columns and every
-- column that references a deleted row are indexed. Without the latter, each deleted parent row
-- makes SQLite scan the whole child table to apply ON DELETE (a deployment is referenced by
-- webhook deliveries and by its rollbacks; a delivery by its duplicates).

CREATE INDEX token_audit_events_at ON token_audit_events (at);
CREATE INDEX webhook_deliveries_deployment ON webhook_deliveries (deployment_id);
CREATE INDEX webhook_deliveries_duplicate ON webhook_deliveries (duplicate_of);
CREATE INDEX deployments_rollback_of ON deployments (rollback_of);
-- Finished jobs go after a while, but the newest of each kind per app stays: the services page
-- shows why the last change of the services failed.
CREATE INDEX jobs_app_kind ON jobs (app_id, kind, id);
