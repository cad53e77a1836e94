//! A bare axum server that answers every GET with the same bytes: the baseline the API
//! benchmark compares `GET /api/v1/apps` against (same runtime settings, no ledger, no auth).
//! It answers every POST, once its body is read, with 202 and a short JSON body: the baseline
//! the webhook benchmark sends its rounds of deliveries to, beside the server's.
//!
//! Usage: bare_http FILE   (prints "listening on http://ADDR" and serves until killed)

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: bare_http FILE");
    let body: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().fallback(
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }).post(
                |delivery: Bytes| async move {
                    let answer = format!(r#"{{"accepted":true,"bytes":{}}}"#, delivery.len());
                    (
                        StatusCode::ACCEPTED,
                        [(header::CONTENT_TYPE, "application/json")],
                        answer,
                    )
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
