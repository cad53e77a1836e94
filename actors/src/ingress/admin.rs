//! Caddy's admin API: load a whole configuration, read the live one back. A trait, so that
//! RouterSync's own logic can be tested without a Caddy; the end-to-end tests use the real one.

use std::time::Duration;

use serde_json::Value;

use crate::deploy::docker::BoxFuture;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Caddy could not be reached or did not answer in time.
    #[error("Caddy's admin API is unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Caddy refused the configuration; the previous one stays live.
    #[error("Caddy rejected the configuration: {0}")]
    Rejected(String),
}

pub trait CaddyAdmin: Send + Sync + 'static {
    /// Replaces the live configuration atomically (`POST /load`).
    fn load<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<(), AdminError>>;
    /// The live configuration (`GET /config/`); `null` when Caddy has none.
    fn config(&self) -> BoxFuture<'_, Result<Value, AdminError>>;
    /// How many requests Caddy is proxying to each upstream it knows (`GET
    /// /reverse_proxy/upstreams`), by `IP:port`. An admin that cannot tell answers an error,
    /// and a drain then waits its whole time.
    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, AdminError>> {
        Box::pin(async {
            Err(AdminError::Unreachable {
                url: String::new(),
                reason: "this admin does not count requests".into(),
            })
        })
    }
}

/// The admin API over HTTP, e.g. `http://127.0.0.1:2019`.
pub struct HttpAdmin {
    url: String,
    client: reqwest::Client,
}

impl HttpAdmin {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("a client without TLS always builds");
        Self {
            url: url.trim_end_matches('/').to_string(),
            client,
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> AdminError {
        AdminError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }
}

/// Caddy's error answers are `{"error": "..."}`; anything else is quoted as it came.
fn caddy_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

impl CaddyAdmin for HttpAdmin {
    fn load<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(format!("{}/load", self.url))
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(config).expect("a Value serialises"))
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| self.unreachable(e))?;
            if status.is_success() {
                Ok(())
            } else if status.is_client_error() {
                Err(AdminError::Rejected(caddy_message(&body)))
            } else {
                Err(self.unreachable(format!("{status}: {}", caddy_message(&body))))
            }
        })
    }

    fn config(&self) -> BoxFuture<'_, Result<Value, AdminError>> {
        Box::pin(self.get_json("/config/"))
    }

    fn in_flight(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, AdminError>> {
        Box::pin(async move {
            let upstreams = self.get_json("/reverse_proxy/upstreams").await?;
            Ok(upstreams
                .as_array()
                .map(|all| {
                    all.iter()
                        .filter_map(|u| {
                            Some((
                                u["address"].as_str()?.to_string(),
                                u["num_requests"].as_u64()?,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default())
        })
    }
}

impl HttpAdmin {
    async fn get_json(&self, path: &str) -> Result<Value, AdminError> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(self.unreachable(format!("{status}: {}", caddy_message(&body))));
        }
        serde_json::from_str(&body).map_err(|e| self.unreachable(format!("invalid JSON: {e}")))
    }
}

/// The `host:port` a URL's admin endpoint listens on, kept in every loaded configuration.
pub fn listen_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    if hostport.is_empty() {
        return None;
    }
    Some(if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_give_their_listen_address() {
        assert_eq!(
            listen_of("http://127.0.0.1:2019").as_deref(),
            Some("127.0.0.1:2019")
        );
        assert_eq!(
            listen_of("http://localhost:2019/").as_deref(),
            Some("localhost:2019")
        );
        assert_eq!(listen_of("https://x:1"), None);
        assert_eq!(listen_of("http://"), None);
    }

    #[test]
    fn caddy_errors_are_quoted_from_their_body() {
        assert_eq!(caddy_message(r#"{"error":"bad thing"}"#), "bad thing");
        assert_eq!(caddy_message("plain\n"), "plain");
    }
}
