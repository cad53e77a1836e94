-- The newest push accepted to deploy, per app and ref. A push whose repository.pushed_at is
-- older, or that names the commit this push already deployed or queued, is not deployed: a
-- replayed body (a new delivery id on an old payload) or a late delivery must never take an
-- app back to an older commit. One row per app and ref, so it outlives the pruning of the
-- deliveries list.

CREATE TABLE webhook_push_heads (
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- refs/heads/<branch> or refs/tags/<tag>, as the push named it.
    git_ref         TEXT    NOT NULL,
    -- repository.pushed_at of the push (unix seconds); NULL when the payload had none.
    pushed_at       INTEGER,
    -- The commit the push deployed or queued.
    commit_sha      TEXT    NOT NULL,
    delivery_id     TEXT    NOT NULL,
    accepted_at     INTEGER NOT NULL,
    PRIMARY KEY (app_id, git_ref)
) WITHOUT ROWID;
