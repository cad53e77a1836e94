-- An app's deletion is a job run by its Deployer (`app_delete`). From the request until the
-- job deleted the app's rows, the app is marked here, so the API and the dashboard show that
-- it is going and nothing new is started for it.
ALTER TABLE apps ADD COLUMN deleting_at INTEGER;

-- Nothing new is queued for an app being deleted: no deployment, rollback, backup, restore or
-- services change (each is a job of the app), whichever path asks. The message starts with
-- the refusal's code, which `ledger/apps.rs` recognises.
CREATE TRIGGER jobs_refused_while_app_deleting BEFORE INSERT ON jobs
    WHEN NEW.app_id IS NOT NULL AND NEW.kind != 'app_delete'
     AND (SELECT deleting_at FROM apps WHERE id = NEW.app_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'app_deleting: this app is being deleted, so nothing new can be queued for it');
END;

-- Its name is part of what its deletion removes from the engine: it stays until the end.
CREATE TRIGGER apps_name_kept_while_deleting BEFORE UPDATE OF name ON apps
    WHEN OLD.deleting_at IS NOT NULL AND NEW.name != OLD.name
BEGIN
    SELECT RAISE(ABORT, 'app_deleting: this app is being deleted, so it cannot be renamed');
END;
