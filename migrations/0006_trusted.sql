-- An app an owner marked trusted deploys its compose file without the policy's refusals
-- (privileged containers, host paths, the Docker socket, ...). Who set the flag and when is kept
-- beside it; each change is also an audit event.

ALTER TABLE apps ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0 CHECK (trusted IN (0, 1));
ALTER TABLE apps ADD COLUMN trusted_by TEXT;
ALTER TABLE apps ADD COLUMN trusted_at INTEGER;
