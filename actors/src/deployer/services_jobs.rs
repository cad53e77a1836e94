//! The jobs about an app's managed services (apply, back up, restore), run in the app's
//! Deployer so they never overlap its deployments.

use super::*;

/// The jobs about an app's managed services. They run in the app's Deployer, so they never
/// overlap its deployments.
impl DeployerState {
    pub(super) async fn app_name(&self) -> Result<String, JobError> {
        let app_id = self.app_id;
        self.ledger
            .run(move |c| crate::ledger::apps::name(c, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal("the app no longer exists".into()))
    }

    pub(super) fn scope<'a>(&'a self, app: &'a str) -> Scope<'a> {
        Scope {
            config: &self.deps.config,
            engine: self.deps.engine.as_ref(),
            app,
        }
    }

    pub(super) async fn managed(&self) -> Result<Vec<Service>, JobError> {
        let (app_id, secrets) = (self.app_id, self.deps.secrets.clone());
        self.ledger
            .run(move |c| service_rows::load(c, &secrets, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))
    }

    /// A `services` job: Docker is brought to the app's service rows (after a service was
    /// added or deleted), and purged volumes are removed.
    pub(super) async fn apply_services(
        &self,
        purge: &[String],
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let managed = self.managed().await?;
        let mut on_line = |_: Stream, line: String| tracing::debug!(%app, "services: {line}");
        self.scope(&app)
            .apply(&managed, purge, cancel, &mut on_line)
            .await
            .map_err(JobError::Retry)
    }

    /// A `backup` job: the dump, its row finished, and the backups beyond retention removed.
    pub(super) async fn backup(&self, id: i64) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let app_id = self.app_id;
        let row = self
            .ledger
            .run(move |c| service_rows::get_backup(c, app_id, id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal(format!("backup {id} no longer exists")))?;
        let managed = self.managed().await?;
        let outcome = match managed.iter().find(|s| s.name == row.service) {
            None => Err(format!("the service '{}' was deleted", row.service)),
            Some(service) => {
                let dest = self.deps.config.data_dir.join(&row.path);
                self.scope(&app).backup(service, &dest).await
            }
        };
        let keep = self.deps.config.services.backup_retention;
        let (result, name) = (outcome.clone(), row.service.clone());
        let pruned = self
            .ledger
            .run(move |c| {
                crate::ledger::services::finish_backup_and_prune(c, app_id, id, &name, result, keep)
            })
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        for b in pruned {
            let path = self.deps.config.data_dir.join(&b.path);
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "removing an old backup failed");
            }
        }
        outcome.map(|_| ()).map_err(JobError::Fatal)
    }

    /// A `restore` job: a finished backup loaded into one of the app's services.
    pub(super) async fn restore(
        &self,
        backup_id: i64,
        service: &str,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app = self.app_name().await?;
        let app_id = self.app_id;
        let row = self
            .ledger
            .run(move |c| service_rows::get_backup(c, app_id, backup_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?
            .ok_or_else(|| JobError::Fatal(format!("backup {backup_id} no longer exists")))?;
        let managed = self.managed().await?;
        let target = managed
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| JobError::Fatal(format!("the service '{service}' no longer exists")))?;
        if BackupState::Done != row.state.as_str() || row.engine != target.engine.as_str() {
            return Err(JobError::Fatal(format!(
                "backup {backup_id} ({}, {}) cannot be restored into '{service}' ({})",
                row.engine,
                row.state,
                target.engine.as_str()
            )));
        }
        let src = self.deps.config.data_dir.join(&row.path);
        tracing::info!(%app, service, backup_id, "restoring a backup");
        self.scope(&app)
            .restore(target, &src, cancel)
            .await
            .map_err(JobError::Fatal)
    }
}
