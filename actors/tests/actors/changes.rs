//! The ledger's change feed: what caches trust is stamped, and a write moves the stamp.

use rustploy_actors::ledger::changes::{StampedCache, Table};

use crate::helpers::{connected_app, ledger};

#[tokio::test]
async fn a_write_moves_the_stamp_of_its_table_only() {
    let t = ledger();
    let changes = t.ledger.changes();
    let apps = changes.stamp(&[Table::Apps]);
    let domains = changes.stamp(&[Table::Domains]);
    t.ledger
        .run(|c| {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('web', 1, 1)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    assert_ne!(changes.stamp(&[Table::Apps]), apps);
    assert_eq!(changes.stamp(&[Table::Domains]), domains);

    // A transaction that rolls back may move it too (caches then read again), but a read
    // never does.
    let after = changes.stamp(&[Table::Apps]);
    t.ledger
        .run(|c| {
            c.query_row("SELECT COUNT(*) FROM apps", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(changes.stamp(&[Table::Apps]), after);
}

#[tokio::test]
async fn credential_changes_move_the_auth_epoch_and_recording_use_does_not() {
    let t = ledger();
    let changes = t.ledger.changes();
    let run = |sql: &'static str| {
        let ledger = t.ledger.clone();
        async move {
            ledger
                .run(move |c| {
                    c.execute_batch(sql)?;
                    Ok(())
                })
                .await
                .unwrap()
        }
    };
    run(
        "INSERT INTO api_tokens (public_id, name, secret_hash, scopes, created_at)
         VALUES ('p1', 'one', x'00', 'read', 1);
         INSERT INTO users (email, password_hash, role, created_at, updated_at)
         VALUES ('a@example.com', 'x', 'viewer', 1, 1);",
    )
    .await;
    let mut epoch = changes.stamp(&[Table::AuthEpoch]);
    run("UPDATE api_tokens SET last_used_at = 5").await;
    assert_eq!(
        changes.stamp(&[Table::AuthEpoch]),
        epoch,
        "use is not a change"
    );
    for change in [
        "UPDATE api_tokens SET revoked_at = 9",
        "UPDATE api_tokens SET expires_at = 9",
        "UPDATE api_tokens SET scopes = 'admin'",
        "UPDATE users SET role = 'owner'",
        "DELETE FROM users",
        "DELETE FROM api_tokens",
    ] {
        run(change).await;
        let now = changes.stamp(&[Table::AuthEpoch]);
        assert_ne!(now, epoch, "{change}");
        epoch = now;
    }
    let n: i64 = t
        .ledger
        .run(|c| Ok(c.query_row("SELECT n FROM auth_epoch", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, 6);
}

#[tokio::test]
async fn a_kept_value_is_given_back_only_while_its_stamp_holds() {
    let t = ledger();
    let changes = t.ledger.changes();
    let cache = StampedCache::new(2);
    let before = changes.stamp(&[Table::GithubIntegrations]);
    cache.keep("octo/shop", before, 1);
    assert_eq!(cache.get("octo/shop", before), Some(1));
    assert_eq!(cache.with("octo/shop", before, |v| v + 1), Some(2));
    t.ledger.run(|c| connected_app(c)).await.unwrap();
    let after = changes.stamp(&[Table::GithubIntegrations]);
    assert_ne!(after, before, "a new integration moves the stamp");
    assert_eq!(cache.get("octo/shop", after), None);
    // Full: a new key starts it over.
    cache.keep("octo/shop", after, 2);
    cache.keep("octo/other", after, 3);
    cache.keep("octo/third", after, 4);
    assert_eq!(cache.get("octo/shop", after), None);
    assert_eq!(cache.get("octo/third", after), Some(4));
}
