//! An app's deletion, run in the app's Deployer.

use super::*;

/// An app's deletion (`app_delete`): it runs in the app's Deployer, so never beside one of its
/// deployments, and it can run again from the start at any point (after a failed attempt or a
/// restart): every step finds what is left by its labels and names, and removing what is gone
/// already is fine.
impl DeployerState {
    pub(super) async fn delete_app(
        &self,
        job: &ClaimedJob,
        purge_volumes: bool,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let app_id = self.app_id;
        let doomed = self
            .ledger
            .run(move |c| crate::ledger::apps::doomed(c, app_id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some(doomed) = doomed else {
            // Deleted already (by an earlier attempt whose end was not recorded).
            self.deps.router.nudge(RouterSyncMsg::Nudge);
            return Ok(());
        };
        let last_attempt = job.attempts >= job.max_attempts;
        match self.teardown_app(&doomed.name, purge_volumes, cancel).await {
            Ok(()) => {}
            Err(e) => match on_engine_error(&e, doomed.ran, last_attempt) {
                OnEngineError::Retry => {
                    return Err(JobError::Retry(format!(
                        "{e}: the app's containers could not be removed, so the app is kept, \
                         marked as being deleted"
                    )));
                }
                OnEngineError::GoOn => {
                    tracing::warn!(app = %doomed.name, error = %e, "tearing down a deleted app failed; it is deleted anyway")
                }
            },
        }
        if cancel.is_cancelled() {
            return Err(JobError::Retry(
                "stopped before the app's rows were deleted".into(),
            ));
        }
        let dir = self.deps.config.app_dir(&doomed.name);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "removing a deleted app's files failed");
        }
        let id = job.id;
        self.ledger
            .run(move |c| crate::ledger::apps::delete(c, app_id, id))
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        // Its domains went with it.
        self.deps.router.nudge(RouterSyncMsg::Nudge);
        tracing::info!(app = %doomed.name, "app deleted");
        Ok(())
    }

    /// Removes everything of the app from the engine: its releases, then its managed services
    /// (after the releases that used them), its own networks (once no release uses them), its
    /// volumes when purged, and its images. Replaced releases still draining go too.
    pub(super) async fn teardown_app(
        &self,
        app: &str,
        purge_volumes: bool,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let engine = self.deps.engine.as_ref();
        let config = &self.deps.config;
        engine.ping().await?;
        let found = engine.app_projects(app).await?;
        for project in plan::stale_projects(&config.project_prefix, app, &found, None) {
            if cancel.is_cancelled() {
                // The caller sees the cancel; the next run starts over.
                return Ok(());
            }
            engine.teardown(&project, config.stop_grace).await?;
        }
        engine
            .teardown(&config.service_names(app).project(), config.stop_grace)
            .await?;
        engine.remove_app_networks(app).await?;
        let scope = config.app_scope(app);
        if purge_volumes {
            engine.remove_app_volumes(app, &scope).await?;
        }
        engine.remove_app_images(&scope).await
    }
}

/// What a deletion does when the engine fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnEngineError {
    /// Keep the app and try again later.
    Retry,
    /// Delete the app's rows anyway.
    GoOn,
}

/// An unreachable engine keeps an app that ran something (its containers would be lost track
/// of); one that never ran anything has nothing there. An engine that answers but refuses is
/// asked again while attempts remain; the last attempt deletes the app anyway, as what is left
/// is the engine's to explain (the failure is logged).
pub(super) fn on_engine_error(e: &EngineError, ran: bool, last_attempt: bool) -> OnEngineError {
    match e {
        EngineError::Unreachable { .. } if ran => OnEngineError::Retry,
        EngineError::Unreachable { .. } => OnEngineError::GoOn,
        EngineError::Api(_) if last_attempt => OnEngineError::GoOn,
        EngineError::Api(_) => OnEngineError::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_keeps_an_app_whose_containers_it_cannot_reach() {
        let unreachable = EngineError::Unreachable {
            at: "unix:///var/run/docker.sock".into(),
            why: "connection refused".into(),
        };
        let refused = EngineError::Api("500: busy".into());
        for last in [false, true] {
            assert_eq!(
                on_engine_error(&unreachable, true, last),
                OnEngineError::Retry
            );
            assert_eq!(
                on_engine_error(&unreachable, false, last),
                OnEngineError::GoOn
            );
        }
        assert_eq!(on_engine_error(&refused, true, false), OnEngineError::Retry);
        assert_eq!(on_engine_error(&refused, true, true), OnEngineError::GoOn);
    }
}
