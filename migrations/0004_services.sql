-- Managed services get what running them needs, and backups outlive the service they came from.
--
-- A mariadb service has a root password beside the app user's. A service deleted without
-- purging its volume keeps its row (deleted_at set): the data in the volume was made with its
-- credentials, so a service made again under that name takes them back. A backup belongs to the app and
-- names its engine and service: deleting a service keeps its backups, so one can be restored
-- into a new service. service_backups was never written before this version, so it is rebuilt.

ALTER TABLE managed_services ADD COLUMN root_password_enc BLOB;
ALTER TABLE managed_services ADD COLUMN deleted_at INTEGER;

DROP TABLE service_backups;

CREATE TABLE service_backups (
    id              INTEGER PRIMARY KEY,
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    service_id      INTEGER REFERENCES managed_services (id) ON DELETE SET NULL,
    service_name    TEXT    NOT NULL,
    engine          TEXT    NOT NULL CHECK (engine IN ('postgres', 'redis', 'mariadb')),
    -- Relative to the data directory.
    path            TEXT    NOT NULL,
    size_bytes      INTEGER,
    state           TEXT    NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX service_backups_app ON service_backups (app_id, service_name, id);
