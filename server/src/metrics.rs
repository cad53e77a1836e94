//! `/metrics`: Prometheus text. HTTP counters and latencies are kept in memory; job, deployment
//! and restart figures are read when scraped, so they are never stale.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::MatchedPath;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The labels of a request's counter. Every request is counted, so they are built without
/// copying a string: the method is a name of ours, the route the router's own pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

/// The labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// The `route` label: the pattern the router matched (reference-counted inside axum, so a
/// clone is a count), or a fixed name for requests no route matched.
#[derive(Clone, Debug)]
pub enum Route {
    Matched(MatchedPath),
    Fixed(&'static str),
}

impl Route {
    pub fn as_str(&self) -> &str {
        match self {
            Route::Matched(path) => path.as_str(),
            Route::Fixed(name) => name,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram>,
    jobs: Family<Labels, Gauge>,
    deployments: Family<Labels, Gauge>,
    restarts: Family<Labels, Gauge>,
    audit_write_failures: Counter,
    /// Scrapes rewrite the gauges; one at a time.
    scrape: Mutex<()>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rustploy");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let jobs = Family::<Labels, Gauge>::default();
        let deployments = Family::<Labels, Gauge>::default();
        let restarts = Family::<Labels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        registry.register("jobs", "Jobs in the ledger by state", jobs.clone());
        registry.register(
            "deployments",
            "Deployments in the ledger by state",
            deployments.clone(),
        );
        registry.register(
            "actor_restarts",
            "Restarts of each actor since the server started",
            restarts.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Token audit events that could not be written (the request itself was answered)",
            audit_write_failures.clone(),
        );
        Self {
            audit_write_failures,
            registry,
            http_requests,
            http_latency,
            jobs,
            deployments,
            restarts,
            scrape: Mutex::new(()),
        }
    }
}

/// The `method` label of a request: the standard methods by name, any other as `other`, so
/// that made-up methods cannot add series without end.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    /// Counts and times one answered request.
    pub fn observe_http(&self, method: &http::Method, route: Route, status: u16, took: Duration) {
        self.http_latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route,
                status,
            })
            .inc();
    }

    /// Counts an audit event that could not be written.
    pub fn audit_write_failed(&self) {
        self.audit_write_failures.inc();
    }

    /// Renders the registry after setting the gauges from fresh figures.
    pub fn render(
        &self,
        jobs: &[(String, i64)],
        deployments: &[(String, i64)],
        restarts: &std::collections::BTreeMap<&'static str, u64>,
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.jobs.clear();
        for (state, n) in jobs {
            self.jobs
                .get_or_create(&vec![("state", state.clone())])
                .set(*n);
        }
        self.deployments.clear();
        for (state, n) in deployments {
            self.deployments
                .get_or_create(&vec![("state", state.clone())])
                .set(*n);
        }
        for (actor, n) in restarts {
            self.restarts
                .get_or_create(&vec![("actor", actor.to_string())])
                .set(*n as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_names_and_the_rest_are_other() {
        let cases = [
            ("GET", "GET"),
            ("POST", "POST"),
            ("DELETE", "DELETE"),
            ("OPTIONS", "OPTIONS"),
            ("FOOBAR", "other"),
            ("get", "other"),
            ("PROPFIND", "other"),
        ];
        for (method, want) in cases {
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&m), want, "{method}");
        }
    }

    #[test]
    fn requests_are_counted_and_timed_per_method_route_and_status() {
        let metrics = Metrics::default();
        let get = http::Method::GET;
        let apps = Route::Fixed("/api/v1/apps");
        for _ in 0..3 {
            metrics.observe_http(&get, apps.clone(), 200, Duration::from_millis(2));
        }
        metrics.observe_http(&get, apps, 404, Duration::ZERO);
        metrics.observe_http(
            &http::Method::POST,
            Route::Fixed("unmatched"),
            404,
            Duration::ZERO,
        );
        let text = metrics.render(&[], &[], &Default::default());
        for line in [
            "rustploy_http_requests_total{method=\"GET\",route=\"/api/v1/apps\",status=\"200\"} 3",
            "rustploy_http_requests_total{method=\"GET\",route=\"/api/v1/apps\",status=\"404\"} 1",
            "rustploy_http_requests_total{method=\"POST\",route=\"unmatched\",status=\"404\"} 1",
            "rustploy_http_request_duration_seconds_count{route=\"/api/v1/apps\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
