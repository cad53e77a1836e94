-- Lookups that ran per request or per delivery and read a whole growing table.
--
-- A delivery's id: every signed delivery asks whether its id was handled before, and a
-- redelivery counts its earlier copies. Without this index SQLite answered the first through
-- the index on `duplicate_of` (whose `IS NULL` matches nearly every row) and the second by
-- reading the table, so each delivery cost a pass over every delivery kept.
CREATE INDEX webhook_deliveries_delivery ON webhook_deliveries (delivery_id);

-- An agent's recent transitions, newest first, as its page shows them; also what deleting an
-- agent looks up for its foreign key.
CREATE INDEX agent_transitions_agent ON agent_transitions (agent_id, id);

-- A service's backups, as removing the service looks them up to clear their reference.
CREATE INDEX service_backups_service ON service_backups (service_id);
