-- A counter that moves whenever something a credential check depends on changes: a token is
-- revoked, its expiry, scopes or secret change, or it is deleted; a user's role changes or the
-- user is removed. The server keeps the tokens it has checked in memory and drops them when
-- this counter moves, so recording a token's use (`last_used_at`) does not drop them.
CREATE TABLE auth_epoch (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   INTEGER NOT NULL
);
INSERT INTO auth_epoch (id, n) VALUES (1, 0);

CREATE TRIGGER api_tokens_auth_update AFTER UPDATE OF public_id, secret_hash, scopes, expires_at, revoked_at
    ON api_tokens BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER api_tokens_auth_delete AFTER DELETE ON api_tokens
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER users_auth_update AFTER UPDATE OF role, email ON users
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER users_auth_delete AFTER DELETE ON users
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
