//! A typed client: one method per operation, one error type.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// How the client talks to the server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Sent as `User-Agent`.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            user_agent: format!("rustploy-api/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client of one server with one API token. Cheap to clone (connections are pooled and
/// shared).
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: it never prints.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:port` or `https://...`, with or without a
    /// trailing slash) that authenticates with `token`.
    pub fn new(base: &str, token: impl Into<String>) -> Result<Self, Error> {
        Self::with_options(base, token, ClientOptions::default())
    }

    pub fn with_options(
        base: &str,
        token: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_string();
        let bad = |message: &str| Error::BaseUrl {
            url: base.clone(),
            message: message.to_string(),
        };
        let url = reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" if cfg!(feature = "rustls") => {}
            "https" => return Err(bad("this build has no TLS support; use an http:// URL")),
            _ => return Err(bad("the URL must start with http:// or https://")),
        }
        if url.host_str().is_none() {
            return Err(bad("the URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("the URL must not have a query or fragment"));
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            base,
            token: token.into(),
            http,
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(Method::GET, path, None::<&()>).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<(), Error> {
        let _: serde_json::Value = self.delete_json(path).await?;
        Ok(())
    }

    /// A `DELETE` whose answer says what became of the resource.
    pub(crate) async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(Method::DELETE, path, None::<&()>).await
    }

    /// Opens a `text/event-stream`, resuming after `last_event_id` when given. The answer's
    /// body is read by the caller as it arrives.
    pub(crate) async fn open_event_stream(
        &self,
        path: &str,
        last_event_id: Option<String>,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // A stream lasts as long as the deployment; the client's whole-request timeout
            // would cut it. Callers reconnect with the last id if it ever ends early.
            .timeout(STREAM_TIMEOUT);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|e| Error::Transport {
            url: url.clone(),
            message: chain(&e.without_url()),
        })?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(Error::from_answer(status.as_u16(), &bytes));
        }
        Ok(response)
    }

    /// Sends one request and decodes a success as `T`, or the answer as an [`Error`].
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| Error::Decode(e.to_string()))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        // The URL is in the error already; reqwest's own message would repeat it.
        let transport = |e: reqwest::Error| Error::Transport {
            url: url.clone(),
            message: chain(&e.without_url()),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Error::from_answer(status.as_u16(), &bytes));
        }
        let bytes = if status == StatusCode::NO_CONTENT && bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// The longest one event stream stays open before the caller reconnects.
const STREAM_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// An error and its causes on one line: reqwest's own message rarely names the cause
/// ("error sending request"), its sources do ("Connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        let c = Client::new("http://127.0.0.1:8080/", "rp_x").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8080");
        assert!(
            !format!("{c:?}").contains("rp_x"),
            "the token must not print"
        );
        for bad in ["127.0.0.1:8080", "ftp://host", "http://", "http://h/?q=1"] {
            assert!(
                matches!(Client::new(bad, "t"), Err(Error::BaseUrl { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transient_transport_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let c = Client::new("http://127.0.0.1:1", "t").unwrap();
        let e = c.agent(1).await.unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
        assert!(e.is_transient(), "{e}");
    }
}
