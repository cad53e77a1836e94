//! The newest push accepted to deploy, per app and ref (`webhook_push_heads`), and the rule that
//! keeps an app from going back to an older commit when an old push body arrives again.
//!
//! GitHub's signature has no timestamp, and a delivery id only catches a redelivery of the same
//! delivery: an old push body sent again under a new delivery id (a replay), or a push that
//! arrives after a newer one, is correctly signed. What orders pushes is in the body:
//! `repository.pushed_at`, the time of the push (a replay carries its old value), and `after`,
//! the commit it moved the ref to.

use rusqlite::{Connection, OptionalExtension, params};

use super::{LedgerError, now_ms};

/// A push, as far as its order goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushHead {
    pub delivery_id: String,
    /// The commit the push deploys.
    pub commit_sha: String,
    /// `repository.pushed_at`, in unix seconds, when the payload had it.
    pub pushed_at: Option<i64>,
}

/// Why `push` must not deploy, given the newest push accepted before it for the same app and
/// ref; `None` when it may. A push is refused when it names the commit the newest push already
/// deployed or queued, or when it was pushed before it. Pushes in the same second are not
/// ordered by time (GitHub gives seconds), and a payload without `pushed_at` only by its commit.
pub fn replayed(push: &PushHead, newest: Option<&PushHead>, git_ref: &str) -> Option<String> {
    let newest = newest?;
    let name = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref);
    if push.commit_sha == newest.commit_sha {
        return Some(format!(
            "commit {} is what the newest accepted push to '{name}' (delivery {}) already \
             deployed or queued: a replayed push is not deployed again",
            short(&push.commit_sha),
            newest.delivery_id
        ));
    }
    match (push.pushed_at, newest.pushed_at) {
        (Some(at), Some(newest_at)) if at < newest_at => Some(format!(
            "pushed at {}, older than the newest accepted push to '{name}' (delivery {}, commit \
             {}, pushed at {}): an older push is never deployed over a newer one",
            unix(at),
            newest.delivery_id,
            short(&newest.commit_sha),
            unix(newest_at)
        )),
        _ => None,
    }
}

/// The newest push accepted for `app` and `git_ref`.
pub fn newest(conn: &Connection, app: i64, git_ref: &str) -> Result<Option<PushHead>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT delivery_id, commit_sha, pushed_at FROM webhook_push_heads
              WHERE app_id = ?1 AND git_ref = ?2",
        )?
        .query_row(params![app, git_ref], |r| {
            Ok(PushHead {
                delivery_id: r.get(0)?,
                commit_sha: r.get(1)?,
                pushed_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// Records `push` as the newest accepted for `app` and `git_ref`. A push without `pushed_at`
/// keeps the time of the one it follows: the ref was pushed no earlier than that.
pub fn accept(
    conn: &Connection,
    app: i64,
    git_ref: &str,
    push: &PushHead,
) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO webhook_push_heads (app_id, git_ref, pushed_at, commit_sha, delivery_id,
                accepted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (app_id, git_ref) DO UPDATE
            SET pushed_at = coalesce(excluded.pushed_at, pushed_at),
                commit_sha = excluded.commit_sha, delivery_id = excluded.delivery_id,
                accepted_at = excluded.accepted_at",
    )?
    .execute(params![
        app,
        git_ref,
        push.pushed_at,
        push.commit_sha,
        push.delivery_id,
        now_ms()
    ])?;
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Unix seconds as RFC 3339, or the number when it is out of range.
fn unix(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: &str, sha: char, at: Option<i64>) -> PushHead {
        PushHead {
            delivery_id: id.into(),
            commit_sha: sha.to_string().repeat(40),
            pushed_at: at,
        }
    }

    #[test]
    fn only_pushes_older_than_or_repeating_the_newest_are_refused() {
        let newest = head("d-new", 'b', Some(1_714_557_600));
        let cases = [
            // (push, refused, words the reason must hold)
            (head("d-1", 'c', Some(1_714_557_601)), false, ""),
            (head("d-2", 'c', Some(1_714_557_600)), false, ""),
            (head("d-3", 'c', None), false, ""),
            (head("d-4", 'a', Some(1_714_557_599)), true, "older than"),
            (head("d-5", 'b', Some(1_714_557_600)), true, "already"),
            (head("d-6", 'b', Some(1_714_557_700)), true, "already"),
            (head("d-7", 'b', None), true, "already"),
        ];
        for (push, refused, words) in cases {
            let why = replayed(&push, Some(&newest), "refs/heads/main");
            assert_eq!(why.is_some(), refused, "{push:?}: {why:?}");
            if let Some(why) = why {
                assert!(why.contains(words), "{why}");
                assert!(why.contains("d-new"), "the reason names the newest: {why}");
                assert!(why.contains("'main'"), "{why}");
            }
        }
        assert_eq!(
            replayed(&head("d-8", 'a', Some(1)), None, "refs/heads/main"),
            None,
            "the first push of a ref is never a replay"
        );
        let without_time = head("d-old", 'b', None);
        assert_eq!(
            replayed(
                &head("d-9", 'a', Some(1)),
                Some(&without_time),
                "refs/heads/main"
            ),
            None,
            "without the newest's time only the commit orders"
        );
    }

    #[test]
    fn the_reason_shows_both_times() {
        let newest = head("d-new", 'b', Some(1_714_557_600));
        let why = replayed(
            &head("d-old", 'a', Some(1_714_551_600)),
            Some(&newest),
            "refs/heads/main",
        )
        .unwrap();
        assert!(why.contains("2024-05-01T08:20:00Z"), "{why}");
        assert!(why.contains("2024-05-01T10:00:00Z"), "{why}");
        assert!(why.contains(&"b".repeat(12)), "{why}");
    }
}
