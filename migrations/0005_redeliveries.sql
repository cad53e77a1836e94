-- A redelivery of a delivery already handled is recorded too (outcome 'ignored', pointing at the
-- row it repeats), so the deliveries list explains every request GitHub sent. Only the first
-- accepted row of a delivery id and app counts for uniqueness.

ALTER TABLE webhook_deliveries ADD COLUMN duplicate_of INTEGER
    REFERENCES webhook_deliveries (id) ON DELETE SET NULL;

DROP INDEX webhook_deliveries_once;
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (delivery_id, app_id)
    WHERE outcome != 'rejected' AND duplicate_of IS NULL;
