//! Reachability of the outside parts, for `/readyz`. Each probe has a timeout and reports what
//! failed in words a person can act on.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asks the Docker engine for its version over its Unix socket (`DOCKER_HOST` when it names
/// one, else /var/run/docker.sock).
pub async fn docker(timeout: Duration) -> Value {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let probe = async {
        let mut stream = tokio::net::UnixStream::connect(&socket).await?;
        stream
            .write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(raw)) => {
            let text = String::from_utf8_lossy(&raw);
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
            match serde_json::from_str::<Value>(body) {
                Ok(v) => json!({
                    "ok": true,
                    "version": v["Version"],
                    "api_version": v["ApiVersion"],
                }),
                Err(_) => {
                    json!({ "ok": false, "error": format!("unexpected answer from {socket}") })
                }
            }
        }
        Ok(Err(e)) => {
            json!({ "ok": false, "error": format!("Docker engine unreachable at {socket}: {e}") })
        }
        Err(_) => {
            json!({ "ok": false, "error": format!("Docker engine at {socket} did not answer in time") })
        }
    }
}

/// Reads Caddy's live configuration from its admin endpoint.
pub async fn caddy(admin: &str, timeout: Duration) -> Value {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return json!({ "ok": false, "error": e.to_string() }),
    };
    match client.get(format!("{admin}/config/")).send().await {
        Ok(r) if r.status().is_success() => json!({ "ok": true, "admin": admin }),
        Ok(r) => {
            json!({ "ok": false, "admin": admin, "error": format!("Caddy answered {}", r.status()) })
        }
        Err(e) => {
            json!({ "ok": false, "admin": admin, "error": format!("Caddy admin API unreachable at {admin}: {e}") })
        }
    }
}
