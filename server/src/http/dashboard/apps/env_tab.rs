//! An app's env tab: variables (secret ones masked unless revealed), `.env` import, removal.

use super::*;

// Env vars.

#[derive(Deserialize, Default)]
pub(super) struct EnvQuery {
    pub(super) reveal: Option<bool>,
    pub(super) edit: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct EnvForm {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default)]
    pub(super) value: String,
    pub(super) secret: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct DotenvForm {
    #[serde(default)]
    pub(super) dotenv: String,
    pub(super) secret: Option<String>,
}

pub(super) async fn env(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let draft = EnvForm {
        key: q.edit.clone().unwrap_or_default(),
        ..Default::default()
    };
    env_page(
        &state,
        &v,
        key,
        q.reveal.unwrap_or(false),
        StatusCode::OK,
        &draft,
        &DotenvForm::default(),
        &Problem::default(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn env_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    reveal: bool,
    status: StatusCode,
    draft: &EnvForm,
    dotenv: &DotenvForm,
    problem: &Problem,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let vars = match env::read(state, &v.principal, head.name.clone(), reveal).await {
        Ok(vars) => vars,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let vars = vars.vars;
    // Editing a plain variable starts from its value; a secret one is typed again.
    let mut draft_value = draft.value.clone();
    let mut draft_secret = draft.secret.is_some();
    if draft_value.is_empty()
        && let Some(existing) = vars.get(&draft.key)
    {
        draft_value = existing.value.clone().unwrap_or_default();
        draft_secret = existing.secret;
    }
    let base = format!("/apps/{}", percent(&head.name));
    let can_edit = v.can(Need::Deploy);
    let content = html! {
        section {
            @if vars.is_empty() { p.empty { "No env vars yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Key" } th { "Value" } th { "Updated" } th {} } }
                    tbody {
                        @for (k, var) in &vars {
                            tr {
                                td.mono { (k) @if var.secret { " " (badge("secret")) } }
                                td.mono { @if var.masked { span.masked { "••••••••" } } @else { (var.value.as_deref().unwrap_or("")) } }
                                td { (when_str(&var.updated_at)) }
                                td {
                                    @if can_edit {
                                        a href={ (base) "/env?edit=" (percent(k)) } { "Edit" }
                                        form.inline method="post" action={ (base) "/env/delete" } {
                                            (csrf(&v.csrf))
                                            input type="hidden" name="key" value=(k);
                                            button.danger type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
                @if v.can(Need::Admin) && !reveal && vars.values().any(|x| x.masked) {
                    p { a href={ (base) "/env?reveal=true" } { "Reveal secret values" } " (recorded in the audit log)" }
                }
            }
        }
        @if can_edit {
            section {
                h2 { "Set a variable" }
                form.card method="post" action={ (base) "/env" } {
                    (csrf(&v.csrf))
                    (form_error(problem, &["key", "value", "dotenv"]))
                    (field("Key", "key", "text", &draft.key, problem))
                    (field("Value", "value", "text", &draft_value, problem))
                    label.inline {
                        @if draft_secret { input type="checkbox" name="secret" value="on" checked; } @else { input type="checkbox" name="secret" value="on"; }
                        " Secret (masked once saved)"
                    }
                    button type="submit" { "Save" }
                }
                h2 { "Paste a .env file" }
                form.card method="post" action={ (base) "/env/import" } {
                    (csrf(&v.csrf))
                    div.field.invalid[problem.beside("dotenv").is_some()] {
                        label for="f-dotenv" { "KEY=value lines" }
                        textarea id="f-dotenv" name="dotenv" rows="6" { (dotenv.dotenv) }
                        @if let Some(e) = problem.beside("dotenv") { p.field-error role="alert" { (e) } }
                    }
                    label.inline {
                        @if dotenv.secret.is_some() { input type="checkbox" name="secret" value="on" checked; } @else { input type="checkbox" name="secret" value="on"; }
                        " Mark all of them secret"
                    }
                    button type="submit" { "Save all" }
                }
                p.hint { "Changes apply at the next deployment." }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Env, content))
}

pub(super) async fn env_set(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<EnvForm>,
) -> Response {
    let var = NewVar {
        key: form.key.trim().to_string(),
        value: form.value.clone(),
        secret: form.secret.is_some(),
    };
    let p = match env::write(&state, key.clone(), vec![var]).await {
        Ok(_) => return see_other(&format!("/apps/{}/env", percent(&key))),
        Err(e @ env::WriteError::BadKey { .. }) => Problem::at("key", e.to_string()),
        Err(e @ env::WriteError::TooLarge { .. }) => Problem::at("value", e.to_string()),
        Err(e) => return error_page(Some(&v), e.into()),
    };
    env_page(
        &state,
        &v,
        key,
        false,
        StatusCode::UNPROCESSABLE_ENTITY,
        &form,
        &DotenvForm::default(),
        &p,
    )
    .await
}

pub(super) async fn env_import(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DotenvForm>,
) -> Response {
    let secret = form.secret.is_some();
    let problem = match env::parse_dotenv(form.dotenv.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(pairs) => {
            let vars = pairs
                .into_iter()
                .map(|(key, value)| NewVar { key, value, secret })
                .collect();
            match env::write(&state, key.clone(), vars).await {
                Ok(_) => return see_other(&format!("/apps/{}/env", percent(&key))),
                Err(e @ (env::WriteError::BadKey { .. } | env::WriteError::TooLarge { .. })) => {
                    e.to_string()
                }
                Err(e) => return error_page(Some(&v), e.into()),
            }
        }
    };
    env_page(
        &state,
        &v,
        key,
        false,
        StatusCode::UNPROCESSABLE_ENTITY,
        &EnvForm::default(),
        &form,
        &Problem::at("dotenv", problem),
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    pub(super) key: String,
}

pub(super) async fn env_delete(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<KeyForm>,
) -> Response {
    match env::remove(&state, key.clone(), form.key).await {
        Ok(()) => see_other(&format!("/apps/{}/env", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}
