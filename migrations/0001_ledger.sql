-- Rustploy's ledger: the durable truth every actor rebuilds its state from.
-- Times are integer milliseconds since the Unix epoch (UTC). Secret values are stored only as
-- AEAD ciphertext (columns ending in _enc) or as hashes (columns ending in _hash).

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'maintainer', 'viewer')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE sessions (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_hash     BLOB    NOT NULL UNIQUE,
    csrf_token      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    client_addr     TEXT,
    user_agent      TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE password_reset_tokens (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash      BLOB    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);

-- One-time tokens that let the first visitor create the owner of a fresh install.
CREATE TABLE setup_tokens (
    id              INTEGER PRIMARY KEY,
    token_hash      BLOB    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);

CREATE TABLE api_tokens (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    secret_hash     BLOB    NOT NULL,
    -- Comma-separated subset of read, deploy, admin, agent.
    scopes          TEXT    NOT NULL,
    created_by      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    last_used_at    INTEGER
);

-- Who did what through the API: every token-authenticated request, and sensitive actions of
-- signed-in users (revealing secrets). Exactly one of token_id and user_id is set.
CREATE TABLE token_audit_events (
    id              INTEGER PRIMARY KEY,
    token_id        INTEGER REFERENCES api_tokens (id) ON DELETE CASCADE,
    user_id         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    client_addr     TEXT,
    detail          TEXT,
    at              INTEGER NOT NULL
);
CREATE INDEX token_audit_events_token ON token_audit_events (token_id, id);

CREATE TABLE apps (
    id              INTEGER PRIMARY KEY,
    -- A DNS label: it names the compose project (rp-<name>) and the default subdomain.
    name            TEXT    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- What an import detected in the repository, and why.
CREATE TABLE app_import_configs (
    app_id          INTEGER PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    repo_url        TEXT    NOT NULL,
    branch          TEXT    NOT NULL,
    compose_path    TEXT,
    build_mode      TEXT    NOT NULL CHECK (build_mode IN ('compose', 'dockerfile', 'image')),
    routed_service  TEXT,
    port            INTEGER,
    healthcheck_path TEXT,
    manifest_json   TEXT,
    detection_json  TEXT,
    deploy_key_enc  BLOB,
    https_token_enc BLOB,
    imported_at     INTEGER NOT NULL
);

CREATE TABLE app_env_vars (
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key             TEXT    NOT NULL,
    value_enc       BLOB    NOT NULL,
    secret          INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)
) WITHOUT ROWID;

CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY,
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'healthy', 'failed', 'cancelled', 'superseded')),
    step            TEXT    CHECK (step IN ('fetch', 'prepare', 'build', 'start', 'health', 'switch')),
    requested_ref   TEXT,
    commit_sha      TEXT,
    -- Who or what asked: api, dashboard, tui, webhook, rollback, cli.
    trigger         TEXT    NOT NULL,
    triggered_by    TEXT,
    rollback_of     INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    env_snapshot_enc BLOB,
    reason          TEXT,
    step_timings_json TEXT,
    image_ids_json  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX deployments_app ON deployments (app_id, id);
CREATE INDEX deployments_state ON deployments (state);

CREATE TABLE deployment_logs (
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    stream          TEXT    NOT NULL CHECK (stream IN ('system', 'stdout', 'stderr')),
    line            TEXT    NOT NULL,
    PRIMARY KEY (deployment_id, seq)
) WITHOUT ROWID;

-- The durable job queue. A job is claimed under a lease (locked_until, locked_by); a lease that
-- expires (a crash) makes the job claimable again. job_key stops the same work being queued twice.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    job_key         TEXT,
    payload         TEXT    NOT NULL DEFAULT '{}',
    app_id          INTEGER REFERENCES apps (id) ON DELETE CASCADE,
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    next_run_at     INTEGER NOT NULL,
    locked_until    INTEGER,
    locked_by       TEXT,
    last_error      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE UNIQUE INDEX jobs_active_key ON jobs (job_key)
    WHERE job_key IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_due ON jobs (state, next_run_at, id);
CREATE INDEX jobs_deployment ON jobs (deployment_id);

-- Where an app's live release answers: one row per routed container.
CREATE TABLE app_runtimes (
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    container_id    TEXT    NOT NULL,
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    service         TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (app_id, container_id)
) WITHOUT ROWID;

CREATE TABLE domains (
    id              INTEGER PRIMARY KEY,
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    hostname        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    tls             TEXT    NOT NULL DEFAULT 'auto' CHECK (tls IN ('auto', 'internal', 'custom', 'off')),
    cert_path       TEXT,
    key_path        TEXT,
    redirect_to     TEXT,
    path_prefix     TEXT,
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'routed', 'error')),
    status_message  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX domains_app ON domains (app_id);

CREATE TABLE managed_services (
    id              INTEGER PRIMARY KEY,
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    engine          TEXT    NOT NULL CHECK (engine IN ('postgres', 'redis', 'mariadb')),
    image           TEXT    NOT NULL,
    volume          TEXT    NOT NULL,
    username        TEXT,
    password_enc    BLOB,
    database_name   TEXT,
    env_name        TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE service_backups (
    id              INTEGER PRIMARY KEY,
    service_id      INTEGER NOT NULL REFERENCES managed_services (id) ON DELETE CASCADE,
    path            TEXT    NOT NULL,
    size_bytes      INTEGER,
    state           TEXT    NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);

CREATE TABLE github_integrations (
    app_id          INTEGER PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    owner           TEXT    NOT NULL COLLATE NOCASE,
    repo            TEXT    NOT NULL COLLATE NOCASE,
    branch          TEXT    NOT NULL,
    deploy_tags     INTEGER NOT NULL DEFAULT 0,
    secret_enc      BLOB    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX github_integrations_repo ON github_integrations (owner, repo);

-- Every webhook delivery and what became of it. delivery_id makes redeliveries idempotent.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    delivery_id     TEXT    NOT NULL UNIQUE,
    event           TEXT    NOT NULL,
    app_id          INTEGER REFERENCES apps (id) ON DELETE SET NULL,
    git_ref         TEXT,
    commit_sha      TEXT,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('pending', 'deployed', 'ignored', 'rejected')),
    reason          TEXT,
    deployment_id   INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    source_addr     TEXT,
    received_at     INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_id, id);

CREATE TABLE agents (
    id              INTEGER PRIMARY KEY,
    token_id        INTEGER REFERENCES api_tokens (id) ON DELETE SET NULL,
    hostname        TEXT    NOT NULL,
    version         TEXT,
    state           TEXT    NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'stale', 'offline')),
    interval_ms     INTEGER NOT NULL DEFAULT 10000,
    registered_at   INTEGER NOT NULL,
    last_heartbeat_at INTEGER,
    state_changed_at INTEGER NOT NULL
);

CREATE TABLE agent_heartbeats (
    id              INTEGER PRIMARY KEY,
    agent_id        INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    received_at     INTEGER NOT NULL,
    sample_json     TEXT    NOT NULL
);
CREATE INDEX agent_heartbeats_agent ON agent_heartbeats (agent_id, received_at);

CREATE TABLE agent_transitions (
    id              INTEGER PRIMARY KEY,
    agent_id        INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    from_state      TEXT    NOT NULL,
    to_state        TEXT    NOT NULL,
    at              INTEGER NOT NULL
);

-- Small key/value settings that change at run time (base domain, applied router hash).
CREATE TABLE settings (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;
