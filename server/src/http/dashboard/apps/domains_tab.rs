//! An app's domains tab: add with its TLS mode, redirect and path prefix; remove.

use super::*;

// Domains.

#[derive(Deserialize, Default)]
pub(super) struct DomainForm {
    #[serde(default)]
    pub(super) domain: String,
    #[serde(default)]
    pub(super) tls: String,
    #[serde(default)]
    pub(super) cert_path: String,
    #[serde(default)]
    pub(super) key_path: String,
    #[serde(default)]
    pub(super) redirect_to: String,
    #[serde(default)]
    pub(super) path_prefix: String,
}

pub(super) const DOMAIN_FIELDS: &[&str] = &[
    "domain",
    "tls",
    "cert_path",
    "key_path",
    "redirect_to",
    "path_prefix",
];

pub(super) async fn domains(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    domains_page(
        &state,
        &v,
        key,
        StatusCode::OK,
        &DomainForm::default(),
        &Problem::default(),
    )
    .await
}

/// How each TLS mode reads in the form.
pub(super) fn tls_label(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Auto => "auto (ACME)",
        TlsMode::Internal => "internal CA",
        TlsMode::Custom => "custom certificate",
        TlsMode::Off => "off (HTTP only)",
    }
}

pub(super) async fn domains_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    status: StatusCode,
    draft: &DomainForm,
    problem: &Problem,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let app = head.id;
    let list = match state.ledger.run(move |c| domains::domains_of(c, app)).await {
        Ok(l) => l,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let base = format!("/apps/{}", percent(&head.name));
    let tls = if draft.tls.is_empty() {
        TlsMode::Auto.as_str()
    } else {
        draft.tls.as_str()
    };
    let content = html! {
        section id="live" data-refresh="10" {
            @if list.is_empty() { p.empty { "No domains yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Domain" } th { "TLS" } th { "Status" } th { "Certificate" } th { "Source" } th {} } }
                    tbody {
                        @for d in &list {
                            tr {
                                td { a href=(d.url) rel="noreferrer" { (d.url) }
                                    @if let Some(r) = &d.redirect_to { br; small { "redirects to " (r) } } }
                                td { (d.tls.as_str()) }
                                td { (badge(d.status.as_str())) @if let Some(m) = &d.status_message { br; small.reason { (m) } } }
                                td { @if let Some(c) = &d.certificate {
                                        (c.issuer) @if let Some(na) = &c.not_after { br; small { "until " (when_str(na)) } } } }
                                td { (d.source.as_str()) }
                                td {
                                    @if v.can(Need::Deploy) && d.source != DomainSource::Base {
                                        form method="post" action={ (base) "/domains/delete" } {
                                            (csrf(&v.csrf))
                                            input type="hidden" name="domain" value=(d.domain);
                                            button.danger type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        @if v.can(Need::Deploy) {
            section {
                h2 { "Add a domain" }
                form.card method="post" action={ (base) "/domains" } {
                    (csrf(&v.csrf))
                    (form_error(problem, DOMAIN_FIELDS))
                    (field("Domain", "domain", "text", &draft.domain, problem))
                    div.field.invalid[problem.beside("tls").is_some()] {
                        label for="f-tls" { "TLS" }
                        select id="f-tls" name="tls" {
                            @for &m in TlsMode::ALL {
                                @if m.as_str() == tls { option value=(m.as_str()) selected { (tls_label(m)) } } @else { option value=(m.as_str()) { (tls_label(m)) } }
                            }
                        }
                        @if let Some(e) = problem.beside("tls") { p.field-error role="alert" { (e) } }
                    }
                    details {
                        summary { "More" }
                        (field("Certificate file (custom TLS)", "cert_path", "text", &draft.cert_path, problem))
                        (field("Key file (custom TLS)", "key_path", "text", &draft.key_path, problem))
                        (field("Redirect to (origin)", "redirect_to", "text", &draft.redirect_to, problem))
                        (field("Path prefix", "path_prefix", "text", &draft.path_prefix, problem))
                    }
                    button type="submit" { "Add domain" }
                }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Domains, content))
}

pub(super) async fn domain_add(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DomainForm>,
) -> Response {
    let body = NewDomain {
        domain: form.domain.trim().to_string(),
        tls: some(&form.tls),
        cert_path: some(&form.cert_path),
        key_path: some(&form.key_path),
        redirect_to: some(&form.redirect_to),
        path_prefix: some(&form.path_prefix),
    };
    let (status, problem) = match domains::add(&state, key.clone(), body).await {
        Ok(_) => return see_other(&format!("/apps/{}/domains", percent(&key))),
        Err(domains::AddError::Invalid(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem::at(e.field(), e.to_string()),
        ),
        Err(e @ domains::AddError::TooMany) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem::at("domain", e.to_string()),
        ),
        Err(e @ (domains::AddError::DashboardHost(_) | domains::AddError::Taken { .. })) => {
            (StatusCode::CONFLICT, Problem::at("domain", e.to_string()))
        }
        Err(e) => return error_page(Some(&v), e.into()),
    };
    domains_page(&state, &v, key, status, &form, &problem).await
}

#[derive(Deserialize)]
pub(super) struct DomainKey {
    #[serde(default)]
    pub(super) domain: String,
}

pub(super) async fn domain_remove(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DomainKey>,
) -> Response {
    match domains::remove(&state, key.clone(), form.domain).await {
        Ok(()) => see_other(&format!("/apps/{}/domains", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}
