//! `.env` uploads: values are stored as written, never expanded from the server's environment.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::harness::{Harness, Reply};

async fn upload(h: &Harness, token: &str, file: &str) -> Reply {
    let req = Request::put("/api/v1/apps/web/env")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(file.to_string()))
        .unwrap();
    h.send(req).await
}

#[tokio::test]
async fn a_dotenv_upload_keeps_every_dollar_and_never_reads_the_servers_environment() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    let deploy = h.token("deploy").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    // PATH and HOME are set in every test process, as the server's secrets are in its own.
    let file = "FROM_PATH=${PATH}\nBARE=$HOME\nQUOTED=\"${HOME}/x\"\nLITERAL='$PATH'\n\
                PASSWORD=pa$$w0rd\nESCAPED=\"a\\$b\"\n";
    let r = upload(&h, &deploy, file).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .call(Method::GET, "/api/v1/apps/web/env", Some(&deploy), None)
        .await;
    let value = |k: &str| {
        r.body["vars"][k]["value"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    assert_eq!(value("FROM_PATH"), "${PATH}");
    assert_eq!(value("BARE"), "$HOME");
    assert_eq!(value("QUOTED"), "${HOME}/x");
    assert_eq!(value("LITERAL"), "$PATH");
    assert_eq!(value("PASSWORD"), "pa$$w0rd");
    assert_eq!(value("ESCAPED"), "a$b");
}

#[tokio::test]
async fn a_bad_dotenv_line_is_named_without_repeating_it() {
    let h = Harness::new().await;
    let admin = h.token("admin").await;
    h.call(
        Method::POST,
        "/api/v1/apps",
        Some(&admin),
        Some(&json!({ "name": "web" })),
    )
    .await;
    let r = upload(&h, &admin, "OK=1\n\nhunter2-is-my-password\n").await;
    assert_eq!(r.error(422, "a line without '='"), "invalid");
    assert_eq!(r.body["error"]["details"]["line"], 3, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 3")
    );
    assert!(!r.text.contains("hunter2"), "{}", r.text);

    let r = upload(&h, &admin, "KEY=\"hunter2 opens here\nOTHER=1\n").await;
    r.error(422, "an unclosed quote");
    assert!(!r.text.contains("hunter2"), "{}", r.text);

    let req = Request::put("/api/v1/apps/web/env")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(vec![b'A', b'=', 0xff, b'\n']))
        .unwrap();
    h.send(req).await.error(422, "a file that is not UTF-8");
    // Nothing of a refused file is stored.
    let r = h
        .call(Method::GET, "/api/v1/apps/web/env", Some(&admin), None)
        .await;
    assert_eq!(r.body["vars"], json!({}), "{}", r.text);
}
