-- Webhook deliveries become one row per delivery and app, and rejected requests are kept too.
--
-- One GitHub delivery can concern several apps built from the same repository, and a delivery
-- first rejected (a wrong secret) must still be accepted when GitHub redelivers it, with the same
-- delivery id, after the secret was fixed. So a delivery id is unique only among the accepted
-- rows of one app, which needs the table rebuilt (SQLite cannot drop a UNIQUE constraint).

CREATE TABLE webhook_deliveries_new (
    id              INTEGER PRIMARY KEY,
    -- X-GitHub-Delivery; NULL only on a rejected request that carried none.
    delivery_id     TEXT,
    event           TEXT    NOT NULL,
    app_id          INTEGER REFERENCES apps (id) ON DELETE SET NULL,
    -- repository.full_name as the delivery named it.
    repository      TEXT,
    git_ref         TEXT,
    commit_sha      TEXT,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('pending', 'deployed', 'ignored', 'rejected')),
    reason          TEXT,
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    source_addr     TEXT,
    received_at     INTEGER NOT NULL,
    handled_at      INTEGER
);

INSERT INTO webhook_deliveries_new (id, delivery_id, event, app_id, git_ref, commit_sha, outcome,
                                    reason, deployment_id, source_addr, received_at)
    SELECT id, delivery_id, event, app_id, git_ref, commit_sha, outcome,
           reason, deployment_id, source_addr, received_at
      FROM webhook_deliveries;

DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;

CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_id, id);
-- A redelivery finds the accepted rows of its delivery id; rejected attempts do not count.
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (delivery_id, app_id)
    WHERE outcome != 'rejected';
-- WebhookIntake's work list, the deliveries a coalescing push supersedes, and the rejected rows
-- it prunes.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (id) WHERE outcome = 'pending';
CREATE INDEX webhook_deliveries_deployed ON webhook_deliveries (deployment_id)
    WHERE outcome = 'deployed';
CREATE INDEX webhook_deliveries_rejected ON webhook_deliveries (id) WHERE outcome = 'rejected';
