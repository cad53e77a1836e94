//! A deployment, step by step: load what it needs from the ledger, fetch, check the
//! policy, build, start beside the live release, wait for health, switch traffic, and stop
//! the release it replaced.

use super::*;

impl DeployerState {
    pub(super) async fn deploy(
        &self,
        job: &ClaimedJob,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let Some(deployment) = job.deployment_id else {
            return Err(JobError::Fatal(
                "a deploy job must name its deployment".into(),
            ));
        };
        let loaded = self
            .load(deployment)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let Some(loaded) = loaded else {
            return Err(JobError::Fatal(format!(
                "deployment {deployment} no longer exists"
            )));
        };
        if plan::on_start(loaded.state) == Start::AlreadyDone {
            return Ok(());
        }
        let mut redactor = Redactor::new(loaded.app_env.values().cloned());
        if let Some(import) = &loaded.import {
            if let Some(k) = &import.credentials.deploy_key {
                redactor.add(k.clone());
            }
            if let Some(t) = &import.credentials.https_token {
                redactor.add(t.clone());
            }
        }
        let log = LogSink::new(self.deps.logs.clone(), deployment, redactor);
        let mut attempt = Attempt {
            st: self,
            deployment,
            project: self.deps.config.project(&loaded.app, deployment),
            loaded,
            log,
            cancel: cancel.clone(),
            timings: BTreeMap::new(),
        };
        attempt.log.system(format!(
            "attempt {} of {} (job {})",
            job.attempts, job.max_attempts, job.id
        ));
        let outcome = attempt.run().await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(failure) => Err(attempt
                .fail(failure, job.attempts >= job.max_attempts)
                .await),
        };
        attempt.log.close().await;
        result
    }

    pub(super) async fn load(&self, deployment: i64) -> Result<Option<Loaded>, LedgerError> {
        let secrets = self.deps.secrets.clone();
        let app_id = self.app_id;
        self.ledger
            .run(move |c| {
                let Some(inputs) = deployments::attempt_inputs(c, deployment, app_id)? else {
                    return Ok(None);
                };
                let open =
                    |ctx: String, v: Option<Vec<u8>>| -> Result<Option<String>, LedgerError> {
                        v.map(|v| secrets.open_string(&ctx, &v))
                            .transpose()
                            .map_err(|e| LedgerError::Invalid(e.to_string()))
                    };
                let import = match inputs.import {
                    None => None,
                    Some(i) => Some(ImportRow {
                        repo_url: i.repo_url,
                        branch: i.branch,
                        compose_path: i.compose_path,
                        credentials: Credentials {
                            deploy_key: open(contexts::deploy_key(app_id), i.deploy_key_enc)?,
                            https_token: open(contexts::https_token(app_id), i.https_token_enc)?,
                        },
                    }),
                };
                let mut app_env = BTreeMap::new();
                for var in inputs.env {
                    let value = secrets
                        .open_string(&env_context(app_id, &var.key), &var.value_enc)
                        .map_err(|e| LedgerError::Invalid(format!("env var {}: {e}", var.key)))?;
                    app_env.insert(var.key, value);
                }
                // A snapshot (a retry, or a rollback) replaces the app's current env.
                if let Some(s) = &inputs.env_snapshot_enc {
                    let text = secrets
                        .open_string(&contexts::deployment_env(deployment), s)
                        .map_err(|e| LedgerError::Invalid(format!("env snapshot: {e}")))?;
                    app_env = serde_json::from_str(&text)
                        .map_err(|e| LedgerError::Invalid(format!("env snapshot: {e}")))?;
                }
                Ok(Some(Loaded {
                    state: inputs.state,
                    app: inputs.app,
                    requested_ref: inputs.requested_ref,
                    snapshot: inputs.env_snapshot_enc,
                    import,
                    app_env,
                    live: inputs.live,
                    trusted: inputs.trusted,
                }))
            })
            .await
    }
}

/// One attempt at one deployment.
pub(super) struct Attempt<'a> {
    st: &'a DeployerState,
    deployment: i64,
    project: String,
    loaded: Loaded,
    log: LogSink,
    cancel: CancellationToken,
    timings: BTreeMap<String, u64>,
}

/// What the prepare step settled.
pub(super) struct Prepared {
    detection: Detection,
    runtime_file: PathBuf,
}

impl Attempt<'_> {
    pub(super) fn config(&self) -> &DeployConfig {
        &self.st.deps.config
    }

    pub(super) fn engine(&self) -> &dyn Engine {
        self.st.deps.engine.as_ref()
    }

    pub(super) async fn run(&mut self) -> Result<(), Failure> {
        let Some(import) = self.loaded.import.as_ref() else {
            return Err(Failure::User(
                "this app has no repository: import it with POST /api/v1/apps/import".into(),
            ));
        };
        let (url, branch) = (import.repo_url.clone(), import.branch.clone());
        let git_ref = self.loaded.requested_ref.clone().unwrap_or(branch);
        self.begin().await?;
        self.engine().ping().await.map_err(engine_failure)?;
        self.clean_stale().await?;

        let t = self.step(DeployStep::Fetch).await?;
        let sha = self.fetch(&url, &git_ref).await?;
        self.done(DeployStep::Fetch, t);
        self.record(move |c, id| deployments::set_commit(c, id, &sha))
            .await?;

        let t = self.step(DeployStep::Prepare).await?;
        let prepared = self.prepare().await?;
        self.done(DeployStep::Prepare, t);

        let t = self.step(DeployStep::Build).await?;
        let start = self.up(&prepared).await?;
        self.timings.insert(
            DeployStep::Build.to_string(),
            (start - t).as_millis() as u64,
        );
        self.done(DeployStep::Start, start);

        let t = self.step(DeployStep::Health).await?;
        let routed = self.wait_healthy(&prepared).await?;
        self.done(DeployStep::Health, t);

        let t = self.step(DeployStep::Switch).await?;
        self.switch(&prepared, routed, t).await
    }

    /// Marks the deployment running (a retry keeps its first start time).
    pub(super) async fn begin(&mut self) -> Result<(), Failure> {
        self.record(|c, id| deployments::begin(c, id, now_ms()).map(drop))
            .await
    }

    /// Tears down what earlier attempts or crashes left: every project of the app but the
    /// live release's.
    pub(super) async fn clean_stale(&mut self) -> Result<(), Failure> {
        let app = self.loaded.app.clone();
        let found = self
            .engine()
            .app_projects(&app)
            .await
            .map_err(engine_failure)?;
        let stale = plan::stale_projects(
            &self.config().project_prefix,
            &app,
            &found,
            self.loaded.live,
        );
        let draining: Vec<String> = {
            let mut d = self.st.draining.lock().expect("not poisoned");
            let now = Instant::now();
            d.retain(|_, until| *until > now);
            d.keys().cloned().collect()
        };
        for project in stale {
            if draining.contains(&project) {
                self.log.system(format!(
                    "leaving {project} to finish its drain; it stops on its own"
                ));
                continue;
            }
            self.log
                .system(format!("removing leftover containers of {project}"));
            self.engine()
                .teardown(&project, Duration::ZERO)
                .await
                .map_err(engine_failure)?;
        }
        Ok(())
    }

    pub(super) async fn step(&mut self, step: DeployStep) -> Result<Instant, Failure> {
        if self.cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        self.log.system(format!("== {step}"));
        self.record(move |c, id| deployments::step(c, id, step).map(drop))
            .await?;
        Ok(Instant::now())
    }

    pub(super) fn done(&mut self, step: DeployStep, started: Instant) {
        self.timings
            .insert(step.to_string(), started.elapsed().as_millis() as u64);
    }

    pub(super) async fn record(
        &self,
        f: impl FnOnce(&rusqlite::Connection, i64) -> Result<(), LedgerError> + Send + 'static,
    ) -> Result<(), Failure> {
        let id = self.deployment;
        self.st
            .ledger
            .run(move |c| f(c, id))
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))
    }

    pub(super) async fn fetch(&mut self, url: &str, git_ref: &str) -> Result<String, Failure> {
        let import = self.loaded.import.as_ref().expect("checked in run");
        let git = Git {
            timeout: self.config().git_timeout,
            allow_local: self.config().allow_local_repos,
            credentials: import.credentials.clone(),
            scratch: self.config().app_dir(&self.loaded.app).join("ssh"),
        };
        let dir = self.config().src_dir(&self.loaded.app);
        self.log.system(format!("fetching {git_ref}"));
        let log = self.log.clone();
        let sha = git
            .checkout(url, git_ref, &dir, &self.cancel, &mut |s, l| log.line(s, l))
            .await
            .map_err(|e| process_failure("fetching the repository", e))?;
        self.log.system(format!("checked out {sha}"));
        Ok(sha)
    }

    pub(super) async fn prepare(&mut self) -> Result<Prepared, Failure> {
        let src = self.config().src_dir(&self.loaded.app);
        let explicit = self
            .loaded
            .import
            .as_ref()
            .and_then(|i| i.compose_path.clone());
        let (root, app_env) = (src.clone(), self.loaded.app_env.clone());
        let images = crate::deploy::docker::LocalImages::current();
        let detection = tokio::task::spawn_blocking(move || {
            detect::detect_with(&root, explicit.as_deref(), &app_env, &images)
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?
        .map_err(|e| Failure::User(e.to_string()))?;
        for w in &detection.warnings {
            self.log.system(format!("warning: {w}"));
        }
        for r in &detection.reasons {
            self.log.system(r.clone());
        }
        let defaults: BTreeMap<String, String> = detection
            .manifest
            .as_ref()
            .map(|m| {
                m.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_env_string()))
                    .collect()
            })
            .unwrap_or_default();
        let env = plan::deployment_env(&defaults, &self.loaded.app_env);
        if self.loaded.snapshot.is_none() {
            // The snapshot is the app's env at the first attempt; retries and rollbacks reuse it.
            let sealed = self.st.deps.secrets.seal(
                &contexts::deployment_env(self.deployment),
                serde_json::to_string(&self.loaded.app_env)
                    .expect("a map of strings serialises")
                    .as_bytes(),
            );
            self.loaded.snapshot = Some(sealed.clone());
            self.record(move |c, id| deployments::set_env_snapshot(c, id, &sealed))
                .await?;
        }
        // The project as it will run (the file, its override, `extends`), interpolated here by
        // Rustploy with the deployment's variables (compose gets none), and checked against the
        // policy before anything of the release, or a managed service, is made.
        let mut file = self.load_file(&detection, &src, &env).await?;
        self.check_policy(&file, &detection, &src).await?;
        let managed = self.services(&detection).await?;
        let mut env = env;
        let mut urls_added = false;
        for (key, url) in services::app_env(&managed) {
            if self.loaded.app_env.contains_key(&key) {
                self.log.system(format!(
                    "the app's own {key} is kept: it wins over the managed service's"
                ));
            } else {
                env.insert(key, url);
                urls_added = true;
            }
        }
        if urls_added {
            // The file may use the services' URLs too: read it again with them, and check again.
            file = self.load_file(&detection, &src, &env).await?;
            self.check_policy(&file, &detection, &src).await?;
        }
        let spec = RuntimeSpec {
            app_scope: self.config().app_scope(&self.loaded.app),
            app: self.loaded.app.clone(),
            deployment: self.deployment,
            network: self.config().network.clone(),
            routed_service: detection.routed_service.clone(),
            env: env.clone(),
            profiles: detection
                .manifest
                .as_ref()
                .map(|m| m.profiles.clone())
                .unwrap_or_default(),
            private: (!managed.is_empty()).then(|| {
                (
                    self.config().service_names(&self.loaded.app).network(),
                    managed.iter().map(|s| s.name.clone()).collect(),
                )
            }),
        };
        let (doc, notes) = compose::runtime(&file, &spec).map_err(|e| Failure::User(e.0))?;
        for n in notes {
            self.log.system(n);
        }
        // Relative paths meant the folder of the app's own file; compose runs in the app's
        // private runtime folder, outside the checkout, so they are made absolute.
        let compose_dir = match &detection.compose_path {
            Some(p) => Path::new(p)
                .parent()
                .map(|d| src.join(d))
                .unwrap_or(src.clone()),
            None => src.clone(),
        };
        let doc = finalize::finalize(doc, &compose_dir);
        let run_dir = self.config().run_dir(&self.loaded.app);
        let runtime_file = run_dir.join(crate::deploy::runtime_file_name(self.deployment));
        let text = serde_json::to_vec_pretty(&doc).expect("JSON serialises");
        crate::deploy::write_private(&runtime_file, &text)
            .await
            .map_err(Failure::Transient)?;
        let keep: Vec<i64> = [Some(self.deployment), self.loaded.live]
            .into_iter()
            .flatten()
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            crate::deploy::prune_runtime_files(&run_dir, &keep)
        })
        .await;
        self.log.system(format!(
            "wrote the runtime compose file {} (project {})",
            runtime_file.display(),
            self.project
        ));
        self.engine()
            .ensure_network(&self.config().network)
            .await
            .map_err(engine_failure)?;
        Ok(Prepared {
            detection,
            runtime_file,
        })
    }

    /// The app's compose project (or its lone Dockerfile's), read from the checkout and
    /// interpolated with `vars`. Warnings detection did not already log are logged.
    pub(super) async fn load_file(
        &mut self,
        detection: &Detection,
        src: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<ComposeFile, Failure> {
        let Some(p) = &detection.compose_path else {
            return Ok(ComposeFile::for_dockerfile(
                detect::DOCKERFILE_SERVICE,
                detection.dockerfile.as_deref().unwrap_or("Dockerfile"),
            ));
        };
        let (root, p, vars) = (src.to_path_buf(), p.clone(), vars.clone());
        let loaded = tokio::task::spawn_blocking(move || checkout::load_compose(&root, &p, &vars))
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?
            .map_err(Failure::User)?;
        for w in loaded.warnings {
            if !detection.warnings.contains(&w) {
                self.log.system(format!("warning: {w}"));
            }
        }
        Ok(loaded.file)
    }

    /// Applies the compose policy to the file about to run, before anything of the release is
    /// created: an untrusted app asking for what it refuses fails as the app's own fault, each
    /// violation in the log. A trusted app's are logged as allowed, so the log says what ran.
    pub(super) async fn check_policy(
        &mut self,
        file: &ComposeFile,
        detection: &Detection,
        src: &Path,
    ) -> Result<(), Failure> {
        let doc = file.document().clone();
        let (root, compose_path) = (src.to_path_buf(), detection.compose_path.clone());
        let scope = self.config().app_scope(&self.loaded.app);
        let app = self.loaded.app.clone();
        let extending = self
            .st
            .ledger
            .run(move |c| crate::ledger::trust::extending_names(c, &app))
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))?;
        let others: Vec<String> = extending
            .iter()
            .map(|name| self.config().app_scope(name))
            .collect();
        let violations = tokio::task::spawn_blocking(move || {
            let checkout =
                policy::Checkout::new(&root, compose_path.as_deref(), &scope).beside(others);
            policy::check(&doc, &checkout)
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
        if violations.is_empty() {
            return Ok(());
        }
        if self.loaded.trusted {
            for v in &violations {
                self.log
                    .system(format!("allowed because the app is trusted: {v}"));
            }
            return Ok(());
        }
        for v in &violations {
            self.log.system(v.to_string());
        }
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        Err(Failure::User(format!(
            "the compose file asks for what untrusted apps may not have ({}); remove it, or \
             have an owner mark the app trusted",
            lines.join("; ")
        )))
    }

    /// Makes the services the manifest depends on, starts the app's services and waits until
    /// they are healthy: a release starts only beside healthy services. Returns them.
    pub(super) async fn services(
        &mut self,
        detection: &Detection,
    ) -> Result<Vec<Service>, Failure> {
        let engines: Vec<services::Engine> = detection
            .manifest
            .iter()
            .flat_map(|m| &m.dependencies)
            .map(|d| match d {
                crate::deploy::manifest::Dependency::Postgres => services::Engine::Postgres,
                crate::deploy::manifest::Dependency::Redis => services::Engine::Redis,
                crate::deploy::manifest::Dependency::Mysql => services::Engine::Mariadb,
            })
            .collect();
        let (app_id, secrets) = (self.st.app_id, self.st.deps.secrets.clone());
        let config = self.st.deps.config.clone();
        let app = self.loaded.app.clone();
        let (made, managed) = self
            .st
            .ledger
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let names = config.service_names(&app);
                let made = service_rows::ensure(
                    &tx,
                    &secrets,
                    app_id,
                    &engines,
                    |e| config.services.image(e).to_string(),
                    |n| names.volume(n),
                )
                .map_err(|e| match e {
                    service_rows::CreateError::Ledger(e) => e,
                    other => LedgerError::Invalid(other.to_string()),
                })?;
                tx.commit()?;
                Ok((made, service_rows::load(c, &secrets, app_id)?))
            })
            .await
            .map_err(|e| match e {
                LedgerError::Invalid(why) => {
                    Failure::User(format!("the manifest's dependencies: {why}"))
                }
                other => Failure::Transient(format!("the ledger failed: {other}")),
            })?;
        for row in made {
            self.log.system(format!(
                "made the {} service '{}' the manifest depends on ({} receives its URL)",
                row.engine, row.name, row.env_name
            ));
        }
        if managed.is_empty() {
            return Ok(managed);
        }
        for s in &managed {
            self.log.redact(s.password.clone());
            if let Some(r) = &s.root_password {
                self.log.redact(r.clone());
            }
        }
        let names: Vec<String> = managed.iter().map(|s| s.name.clone()).collect();
        self.log.system(format!(
            "starting the app's services: {}",
            managed
                .iter()
                .map(|s| format!("{} ({}, {})", s.name, s.engine.as_str(), s.image))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let scope = Scope {
            config: &self.st.deps.config,
            engine: self.st.deps.engine.as_ref(),
            app: &self.loaded.app,
        };
        let log = self.log.clone();
        scope
            .apply(&managed, &[], &self.cancel, &mut |stream, line| {
                log.line(stream, line)
            })
            .await
            .map_err(Failure::User)?;
        scope
            .wait_healthy(&names, self.config().health_deadline, &self.cancel)
            .await
            .map_err(|why| {
                if self.cancel.is_cancelled() {
                    Failure::Cancelled
                } else {
                    Failure::User(why)
                }
            })?;
        self.log
            .system(format!("services healthy: {}", names.join(", ")));
        Ok(managed)
    }

    /// Builds and starts the project with one `up -d --build`, as a person would: a second
    /// compose invocation costs a whole CLI start-up. The step turns from build to start at
    /// the first container compose creates; returns when that was.
    pub(super) async fn up(&mut self, p: &Prepared) -> Result<Instant, Failure> {
        let run = ComposeRun {
            project: &self.project,
            file: p.runtime_file.clone(),
            args: ["up", "-d", "--build"].map(String::from).to_vec(),
            timeout: self.config().build_timeout,
        };
        let log = self.log.clone();
        let engine = self.st.deps.engine.clone();
        let (ledger, id, project) = (
            self.st.ledger.clone(),
            self.deployment,
            self.project.clone(),
        );
        let mut start: Option<Instant> = None;
        let mut leftovers = BuildLeftovers::default();
        let began = now_ms();
        let outcome = engine
            .compose(run, &self.cancel, &mut |stream, line| {
                leftovers.read(&line);
                if start.is_none() && plan::is_start_line(&project, &line) {
                    start = Some(Instant::now());
                    log.system(format!("== {}", DeployStep::Start));
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let _ = ledger
                            .run(move |c| {
                                deployments::step_from(c, id, DeployStep::Build, DeployStep::Start)
                            })
                            .await;
                    });
                }
                log.line(stream, line)
            })
            .await;
        let what = if start.is_some() { "start" } else { "build" };
        if outcome.is_err() && !leftovers.ids().is_empty() {
            let removed = engine.remove_build_leftovers(leftovers.ids(), began).await;
            if removed > 0 {
                self.log.system(format!(
                    "removed {removed} container(s) the failed build step left behind"
                ));
            }
        }
        outcome.map_err(|e| process_failure(what, e))?;
        Ok(start.unwrap_or_else(Instant::now))
    }

    /// Waits until the release is healthy, and returns its routed containers and their port.
    pub(super) async fn wait_healthy(
        &mut self,
        p: &Prepared,
    ) -> Result<(Vec<ContainerObs>, u16), Failure> {
        let deadline = Instant::now() + self.config().health_deadline;
        let routed = p.detection.routed_service.clone();
        let network = self.config().network.clone();
        let mut probe: Option<(Probe, u16)> = None;
        let mut last = String::new();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Failure::Cancelled);
            }
            let containers = self
                .engine()
                .containers(&self.project, &network)
                .await
                .map_err(engine_failure)?;
            let routed_now: Vec<&ContainerObs> =
                containers.iter().filter(|c| c.service == routed).collect();
            if probe.is_none()
                && let Some(first) = routed_now.first()
            {
                let port = plan::routed_port(p.detection.port, &first.exposed_ports)
                    .map_err(Failure::User)?;
                let how = Probe::choose(
                    first.health.is_some(),
                    p.detection.healthcheck_path.as_deref(),
                );
                self.log.system(format!(
                    "waiting up to {} s for service '{routed}' (port {port}) to pass {}",
                    self.config().health_deadline.as_secs(),
                    how.describe()
                ));
                probe = Some((how, port));
            }
            let probed = match &probe {
                Some((how @ (Probe::Http { .. } | Probe::Tcp), port)) if !routed_now.is_empty() => {
                    let mut result = Ok(());
                    for c in &routed_now {
                        let Some(addr) = &c.address else {
                            result = Err(format!("{} has no address yet", c.name));
                            break;
                        };
                        if let Err(e) =
                            health::probe_once(how, addr, *port, Duration::from_secs(2)).await
                        {
                            result = Err(e);
                            break;
                        }
                    }
                    Some(result)
                }
                _ => None,
            };
            let how = probe.as_ref().map(|(h, _)| h.clone()).unwrap_or(Probe::Tcp);
            match health::verdict(&containers, &routed, &how, probed.as_ref()) {
                Verdict::Healthy => {
                    let port = probe
                        .map(|(_, p)| p)
                        .expect("a verdict of healthy needs a probe");
                    let routed: Vec<ContainerObs> = containers
                        .into_iter()
                        .filter(|c| c.service == routed)
                        .collect();
                    self.log.system(format!(
                        "healthy: {}",
                        routed
                            .iter()
                            .map(|c| format!(
                                "{} at {}:{port}",
                                c.name,
                                c.address.as_deref().unwrap_or("?")
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    return Ok((routed, port));
                }
                Verdict::Failed(why) => return Err(Failure::User(format!("not healthy: {why}"))),
                Verdict::Waiting(why) => {
                    if why != last {
                        self.log.system(format!("waiting: {why}"));
                        last = why;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Failure::User(format!(
                    "not healthy within {} s: {last}",
                    self.config().health_deadline.as_secs()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.cancel.cancelled() => return Err(Failure::Cancelled),
            }
        }
    }

    /// Points the app's runtime at the new release, records it healthy, routes it, and only
    /// then stops the release it replaces.
    pub(super) async fn switch(
        &mut self,
        p: &Prepared,
        (routed, port): (Vec<ContainerObs>, u16),
        started: Instant,
    ) -> Result<(), Failure> {
        let all = self
            .engine()
            .containers(&self.project, &self.config().network)
            .await
            .map_err(engine_failure)?;
        let images: BTreeMap<String, String> = all
            .iter()
            .filter_map(|c| Some((c.service.clone(), c.image_id.clone()?)))
            .collect();
        self.done(DeployStep::Switch, started);
        let release = Release {
            service: p.detection.routed_service.clone(),
            port,
            containers: routed
                .into_iter()
                .filter_map(|c| {
                    Some(RoutedContainer {
                        container_id: c.id,
                        address: c.address?,
                    })
                })
                .collect(),
            timings: self.timings.clone(),
            images,
        };
        let app_id = self.st.app_id;
        let previous = self.loaded.live;
        let deployment = self.deployment;
        // A cancel that arrived during the health check wins: nothing is switched. The
        // replaced release's addresses are read in the same call, for its drain.
        let (switched, replaced) = self
            .st
            .ledger
            .run(move |c| {
                let replaced: Vec<String> = deployments::views::routes(c, app_id)?
                    .into_iter()
                    .map(|r| format!("{}:{}", r.address, r.port))
                    .collect();
                let switched = deployments::switch(c, deployment, app_id, &release)?;
                Ok((switched.is_done(), replaced))
            })
            .await
            .map_err(|e| Failure::Transient(format!("the ledger failed: {e}")))?;
        if !switched {
            return Err(Failure::Cancelled);
        }
        self.log.system(format!(
            "switched: the app now runs deployment {} ({})",
            self.deployment, self.project
        ));
        self.route().await;
        if let Some(old) = previous.filter(|old| *old != self.deployment) {
            self.retire(old, &p.detection.services, replaced);
        }
        Ok(())
    }

    /// Waits until Caddy routes to the new release (RouterSync answers once it loaded the
    /// routes), so the previous release is drained only after it stopped receiving requests.
    pub(super) async fn route(&mut self) {
        let started = Instant::now();
        let report = match self.st.deps.router.get() {
            Some(router) => ractor::call_t!(
                router,
                RouterSyncMsg::Sync,
                ROUTE_TIMEOUT.as_millis() as u64
            )
            .unwrap_or_else(|e| SyncReport::Failed(format!("RouterSync did not answer: {e}"))),
            None => SyncReport::Failed("RouterSync is restarting".into()),
        };
        let ms = started.elapsed().as_millis() as u64;
        match report {
            SyncReport::Applied => {
                self.timings.insert("route".into(), ms);
                // The switch already recorded the other steps' timings.
                let recorded = self
                    .record(move |c, id| deployments::add_timing(c, id, "route", ms))
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!("recording the route timing failed: {e:?}");
                }
                self.log.system(format!(
                    "routed: Caddy sends requests to the new release ({ms} ms)"
                ));
            }
            SyncReport::Unmanaged => self
                .log
                .system("not routed: no ingress is configured (--caddy)"),
            SyncReport::Failed(why) => self.log.system(format!(
                "routing is not confirmed ({why}); RouterSync keeps retrying"
            )),
        }
    }

    /// Stops a replaced release and drops its images, in the background: the new release is
    /// already live, and the app's next deployment should not wait for the old one's stop
    /// grace. The release first finishes the requests Caddy still proxies to it (`dials`),
    /// for at most the drain time. If this is interrupted (a crash), the next deployment's
    /// cleanup finishes it.
    pub(super) fn retire(&mut self, old: i64, services: &[String], dials: Vec<String>) {
        let project = self.config().project(&self.loaded.app, old);
        let grace = self.config().stop_grace;
        let scope = self.config().app_scope(&self.loaded.app);
        let images: Vec<String> = services
            .iter()
            .map(|s| compose::image_tag(&scope, s, old))
            .collect();
        self.log.system(format!(
            "stopping the previous release ({project}) once its requests finish (at most {} s)",
            self.config().drain.as_secs()
        ));
        let engine = self.st.deps.engine.clone();
        let caddy = self.st.deps.caddy.clone();
        let drain = self.config().drain;
        let draining = self.st.draining.clone();
        draining
            .lock()
            .expect("not poisoned")
            .insert(project.clone(), Instant::now() + drain + grace);
        tokio::spawn(async move {
            // Requests already inside the old release get to finish.
            let drained = drain_requests(caddy.as_deref(), &dials, drain).await;
            tracing::info!(%project, "{drained}");
            let outcome = engine.teardown(&project, grace).await;
            draining.lock().expect("not poisoned").remove(&project);
            match outcome {
                Ok(()) => engine.remove_images(&images).await,
                Err(e) => {
                    tracing::warn!(%project, error = %e, "the previous release could not be removed yet; the next deployment retries")
                }
            }
        });
    }

    /// Ends a failed attempt: removes this deployment's own containers (the live release is
    /// untouched), says why in the log, and turns the failure into the job's outcome.
    pub(super) async fn fail(&mut self, failure: Failure, last_attempt: bool) -> JobError {
        let what = match &failure {
            Failure::Cancelled => "stopped".to_string(),
            Failure::User(r) => format!("failed: {r}"),
            Failure::Transient(r) if last_attempt => format!("failed: {r}"),
            Failure::Transient(r) => format!("attempt failed, will retry: {r}"),
        };
        self.log.system(what);
        if let Err(e) = self.engine().teardown(&self.project, Duration::ZERO).await {
            self.log.system(format!(
                "could not remove this deployment's containers: {e}"
            ));
        }
        if matches!(failure, Failure::Cancelled) {
            // Stopped without a cancel request: the server is shutting down and gives the job
            // back; the deployment waits in the queue for the next start instead of claiming to
            // run.
            let _ = self
                .record(|c, id| deployments::interrupt(c, id).map(drop))
                .await;
        }
        if let Failure::Transient(r) = &failure
            && !last_attempt
        {
            let r = r.clone();
            let _ = self
                .record(move |c, id| {
                    deployments::requeue(c, id, &format!("retrying: {r}")).map(drop)
                })
                .await;
        }
        failure.into_job_error()
    }
}

pub(super) fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::Unreachable { .. } => Failure::Transient(e.to_string()),
        EngineError::Api(_) => Failure::User(e.to_string()),
    }
}

/// A one-line reason for a failed external program: what was being done, and the last thing
/// the program said.
pub(super) fn process_failure(what: &str, e: ProcessError) -> Failure {
    match e {
        ProcessError::Cancelled => Failure::Cancelled,
        ProcessError::Spawn { .. } => Failure::Transient(format!("{what}: {e}")),
        ProcessError::TimedOut { .. } => Failure::User(format!("{what}: {e}")),
        ProcessError::Failed { ref tail, .. } => {
            let said = telling_line(tail)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            Failure::User(format!("{what}: {e}{said}"))
        }
    }
}

/// Waits until Caddy proxies no request to any of `dials` (seen twice in a row, 100 ms apart)
/// or `drain` has passed, and says which. Without an answer from Caddy it waits all of
/// `drain`.
pub(super) async fn drain_requests(
    caddy: Option<&dyn CaddyAdmin>,
    dials: &[String],
    drain: Duration,
) -> String {
    let started = Instant::now();
    let deadline = started + drain;
    let mut in_flight = 0;
    if let Some(caddy) = caddy.filter(|_| !dials.is_empty()) {
        let mut idle_readings = 0;
        while let Ok(counts) = caddy.in_flight().await {
            in_flight = counts
                .iter()
                .filter(|(address, _)| dials.contains(address))
                .map(|(_, n)| n)
                .sum::<u64>();
            idle_readings = if in_flight == 0 { idle_readings + 1 } else { 0 };
            if idle_readings >= 2 {
                return format!(
                    "no request in flight to the previous release after {} ms",
                    started.elapsed().as_millis()
                );
            }
            if Instant::now() + DRAIN_POLL >= deadline {
                break;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    if in_flight > 0 {
        format!("{in_flight} requests still in flight to the previous release after the drain")
    } else {
        format!("drained for {} ms", started.elapsed().as_millis())
    }
}

/// How often a drain asks Caddy what is still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(100);
