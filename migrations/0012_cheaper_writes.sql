-- Fewer index entries per webhook delivery: every delivery is written once and updated once or
-- twice, and each of these indexes was written each time.
--
-- A delivery's deployment and the delivery it repeats are set on few rows, so their indexes
-- keep only those rows. SQLite still uses them for every lookup by value (`deployment_id = ?`
-- implies `deployment_id IS NOT NULL`), the foreign keys' ON DELETE actions included.
DROP INDEX webhook_deliveries_deployment;
CREATE INDEX webhook_deliveries_deployment ON webhook_deliveries (deployment_id)
    WHERE deployment_id IS NOT NULL;
DROP INDEX webhook_deliveries_duplicate;
CREATE INDEX webhook_deliveries_duplicate ON webhook_deliveries (duplicate_of)
    WHERE duplicate_of IS NOT NULL;

-- The CHECK constraints that list three or more values (`state IN ('queued', 'running', ...)`)
-- are rewritten as comparisons (`state = 'queued' OR state = 'running' OR ...`) by this
-- migration's step in `actors/src/ledger/migrate.rs`: SQLite checks such a list by building a
-- temporary table on every row written, which cost more than the row itself. The two forms
-- accept exactly the same values.
