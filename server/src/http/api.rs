//! `/api/v1`: the route table, each route with the access it needs. Handlers live in the
//! `*_api` modules beside it; what they share (paging, errors, views) in modules of its own.

use axum::Router;
use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use super::auth::{Need, require};

/// Every `/api/v1` operation: method, path, the access it needs, and its handler. `openapi.yaml`
/// is tested against this table.
fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    super::apps_api::table()
        .into_iter()
        .chain(super::jobs_api::table())
        .chain(super::access_api::table())
        .chain(super::env_api::table())
        .chain(super::deploy_api::table())
        .chain(super::domains_api::table())
        .chain(super::webhook_api::table())
        .chain(super::services_api::table())
        .chain(super::agent_api::table())
        .chain(super::trust_api::table())
        .collect()
}

/// The operations as (method, path, need), for tests and the contract check.
pub fn operations() -> Vec<(Method, &'static str, Need)> {
    table().into_iter().map(|(m, p, n, _)| (m, p, n)).collect()
}

pub fn routes(state: &AppState) -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, need, handler)| {
            let guarded = handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), need),
                require,
            ));
            router.route(path, guarded)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `openapi.yaml` is the contract: every operation it documents exists, and every
    /// operation the router serves is documented, with matching security.
    #[test]
    fn the_router_and_openapi_yaml_agree() {
        let spec: serde_json::Value =
            serde_norway::from_str(include_str!("../../../openapi.yaml")).unwrap();
        let mut documented = BTreeSet::new();
        let mut public = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    let key = (method.to_uppercase(), path.clone());
                    if op
                        .get("security")
                        .is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty()))
                    {
                        public.insert(key.clone());
                    }
                    documented.insert(key);
                }
            }
        }
        let served: BTreeSet<(String, String)> = operations()
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not in openapi.yaml: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in openapi.yaml but not served: {unserved:?}"
        );
        let served_public: BTreeSet<(String, String)> = operations()
            .iter()
            .filter(|(_, _, need)| *need == Need::Public)
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            served_public, public,
            "operations without credentials must be marked `security: []`"
        );
    }
}
