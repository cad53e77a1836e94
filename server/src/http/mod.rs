//! The HttpActor: serves the API, the operations endpoints and the dashboard with axum.
//!
//! Handlers read the ledger, write desired state to it, and nudge actors; they never do slow
//! work themselves.

pub mod access_api;
pub mod agent_api;
pub mod api;
pub mod app_delete_api;
pub mod apps_api;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod client;
pub mod dashboard;
pub mod deploy_api;
pub mod domains_api;
pub mod env_api;
pub mod error;
pub mod jobs_api;
pub mod limiter;
pub mod op_errors;
pub mod ops;
pub mod paging;
pub mod read_cache;
pub mod services_api;
pub mod token_cache;
pub mod trust_api;
pub mod views;
pub mod webhook_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use error::ApiError;

use crate::metrics::Route;
pub use crate::state::AppState;

pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::routes(&state))
        .merge(ops::routes())
        .merge(dashboard::routes(&state))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// What every request passes through, in one layer (four layers cost each request four boxed
/// futures and four clones of the state, a tenth of a webhook delivery's work):
///
/// - the client's address is worked out first, so every check, limiter and audit record uses
///   the same one (`client::resolve`);
/// - a body over the limit is refused with our error, whichever part noticed
///   ([`body_too_large`]);
/// - the request is counted and timed by its route pattern, for `/metrics`;
/// - over https the answer tells the browser to use https only for a year, so a later visit
///   never starts in plain http where its cookies or pages could be tampered with. Not over
///   http: local use stays possible, and browsers ignore the header there anyway.
async fn edge(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    client::resolve(&state, &mut req);
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => Route::Matched(path.clone()),
        None => Route::Fixed("unmatched"),
    };
    let method = req.method().clone();
    let started = Instant::now();
    let mut response = body_too_large(req, next).await;
    state.metrics.observe_http(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    if auth::https(&state.settings) {
        response.headers_mut().insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Bodies over the limit are refused with our error body, whichever extractor noticed.
async fn body_too_large(req: Request, next: Next) -> Response {
    // The webhook endpoint takes GitHub's larger payloads and answers its own limit.
    if req.uri().path() == webhook_api::PATH {
        return next.run(req).await;
    }
    if req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > BODY_LIMIT)
    {
        return error::too_large().into_response();
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none_or(|v| v != "application/json")
    {
        return error::too_large().into_response();
    }
    response
}

/// The client's address as text, for limiters and audit records: the peer, or what a trusted
/// proxy forwarded (see `client.rs`).
pub fn client_addr(req: &Request) -> Option<String> {
    client::of(req).map(|ip| ip.to_string())
}

pub type HttpActorRef = ActorRef<HttpMsg>;

pub enum HttpMsg {
    /// The server task ended on its own (an I/O error): fail, so the supervisor restarts us.
    ServerExited(String),
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

pub struct HttpArgs {
    /// Shared so that each incarnation of the actor serves the same socket.
    pub listener: Arc<std::net::TcpListener>,
    pub state: AppState,
    pub drain: Duration,
}

pub struct HttpState {
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    drain: Duration,
}

#[derive(Default)]
pub struct HttpActor;

impl Actor for HttpActor {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = HttpArgs;

    async fn pre_start(
        &self,
        myself: HttpActorRef,
        args: HttpArgs,
    ) -> Result<HttpState, ActorProcessingErr> {
        let listener = args.listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = router(args.state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(e) = result {
                let _ = myself.send_message(HttpMsg::ServerExited(e.to_string()));
            }
        });
        Ok(HttpState {
            stop,
            server,
            drain: args.drain,
        })
    }

    async fn handle(
        &self,
        _myself: HttpActorRef,
        msg: HttpMsg,
        _state: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpMsg::ServerExited(why) => Err(format!("the HTTP server stopped: {why}").into()),
            #[cfg(feature = "fault-injection")]
            HttpMsg::InjectPanic => panic!("injected fault in HttpActor"),
        }
    }

    async fn post_stop(
        &self,
        _myself: HttpActorRef,
        state: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        // Stop accepting, and let requests in flight finish within the drain time.
        state.stop.cancel();
        if tokio::time::timeout(state.drain, &mut state.server)
            .await
            .is_err()
        {
            state.server.abort();
        }
        Ok(())
    }
}
