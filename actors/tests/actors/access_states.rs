//! Access rows against a real ledger: every role and every token scope is stored and read back
//! as itself, and the functions that take access away do so.

use rustploy_actors::ledger::access::{
    self, NewSession, NewToken, NewUser, UserEdit, UserEdited, UserRemoved,
};
use rustploy_api::states::{Role, Scope};

use crate::helpers::ledger;

const IDLE_MS: i64 = 60_000;
const ABSOLUTE_MS: i64 = 3_600_000;

fn session<'a>(user_id: i64, hash: &'a [u8]) -> NewSession<'a> {
    NewSession {
        user_id,
        secret_hash: hash,
        csrf_token: "csrf",
        client_addr: None,
        idle_ms: IDLE_MS,
        absolute_ms: ABSOLUTE_MS,
    }
}

#[test]
fn every_role_round_trips_through_the_ledger() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            // Each role as a new user, read back by id, in the list, and through a session.
            for (i, role) in Role::ALL.iter().enumerate() {
                let email = format!("{role}@example.com");
                let new = NewUser {
                    email: &email,
                    password_hash: "h",
                    role: *role,
                };
                let id = access::create_user(c, &new, 1_000)?.expect("a new email");
                let row = access::user(c, id)?.expect("the user just made");
                assert_eq!((row.email.as_str(), row.role), (email.as_str(), *role));
                let hash = [i as u8; 32];
                access::create_session(c, &session(id, &hash), 1_000)?;
                let s = access::session_for_auth(c, &hash, 1_001, IDLE_MS)?.expect("live");
                assert_eq!((s.user_id, s.role), (id, *role));
            }
            let listed: Vec<Role> = access::users(c, i64::MAX, 10)?
                .into_iter()
                .rev()
                .map(|u| u.role)
                .collect();
            assert_eq!(listed, Role::ALL);
            // Every change of role, from every role, reads back as the role it set. Another
            // owner stays throughout, so no change is refused as the last owner's.
            let keeper = NewUser {
                email: "keeper@example.com",
                password_hash: "h",
                role: Role::Owner,
            };
            access::create_user(c, &keeper, 1_000)?;
            let subject = access::create_user(
                c,
                &NewUser {
                    email: "subject@example.com",
                    password_hash: "h",
                    role: Role::Viewer,
                },
                1_000,
            )?
            .expect("a new email");
            for from in Role::ALL {
                for to in Role::ALL {
                    for role in [*from, *to] {
                        let edit = UserEdit {
                            role: Some(role),
                            ..UserEdit::default()
                        };
                        match access::edit_user(c, subject, &edit, 2_000)? {
                            UserEdited::Done(u) => assert_eq!(u.role, role),
                            other => panic!("{from} -> {to}: {other:?}"),
                        }
                        assert_eq!(access::user(c, subject)?.map(|u| u.role), Some(role));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_scope_round_trips_through_the_ledger_as_the_text_it_always_was() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let mut all = Scope::ALL.to_vec();
            all.sort();
            // Each scope alone, then all of them: read back by id, in the list, and as a
            // credential; stored as the names joined by commas, sorted by name.
            let mut sets: Vec<(Vec<Scope>, String)> = Scope::ALL
                .iter()
                .map(|s| (vec![*s], s.as_str().to_string()))
                .collect();
            sets.push((all, "admin,agent,deploy,read".to_string()));
            for (i, (scopes, text)) in sets.iter().enumerate() {
                let public_id = format!("p{i}");
                let new = NewToken {
                    public_id: &public_id,
                    name: "t",
                    secret_hash: &[i as u8; 32],
                    scopes,
                    created_by: None,
                    expires_at: None,
                };
                let id = access::create_token(c, &new, 0)?;
                let stored: String =
                    c.query_row("SELECT scopes FROM api_tokens WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                assert_eq!(&stored, text);
                assert_eq!(&access::token(c, id)?.expect("the token").scopes, scopes);
                let auth = access::token_for_auth(c, &public_id, 1)?.expect("live");
                assert_eq!(&auth.scopes, scopes);
            }
            let listed: Vec<Vec<Scope>> = access::tokens(c, i64::MAX, 10)?
                .into_iter()
                .rev()
                .map(|t| t.scopes)
                .collect();
            let want: Vec<Vec<Scope>> = sets.into_iter().map(|(s, _)| s).collect();
            assert_eq!(listed, want);
            // A name this version does not know is an error when read, not a scope dropped.
            c.execute(
                "UPDATE api_tokens SET scopes = 'read,root' WHERE public_id = 'p0'",
                [],
            )?;
            assert!(access::token_for_auth(c, "p0", 1).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn demoting_revokes_only_the_tokens_beyond_the_new_role_and_never_the_last_owner() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let owner = NewUser {
                email: "o@example.com",
                password_hash: "h",
                role: Role::Owner,
            };
            let id = access::create_user(c, &owner, 0)?.unwrap();
            let token = |name: &'static str, scopes: &'static [Scope]| {
                let hash = [name.len() as u8; 32];
                let new = NewToken {
                    public_id: name,
                    name,
                    secret_hash: &hash,
                    scopes,
                    created_by: Some(id),
                    expires_at: None,
                };
                access::create_token(c, &new, 0)
            };
            let read = token("r", &[Scope::Read])?;
            let admin = token("adm", &[Scope::Admin, Scope::Read])?;
            let demote = UserEdit {
                role: Some(Role::Viewer),
                ..UserEdit::default()
            };
            assert_eq!(
                access::edit_user(c, id, &demote, 5)?,
                UserEdited::LastOwner,
                "the only owner stays owner"
            );
            assert_eq!(access::remove_user(c, id, 5)?, UserRemoved::LastOwner);
            let other = NewUser {
                email: "p@example.com",
                password_hash: "h",
                role: Role::Owner,
            };
            access::create_user(c, &other, 0)?.unwrap();
            assert!(matches!(
                access::edit_user(c, id, &demote, 7)?,
                UserEdited::Done(_)
            ));
            assert_eq!(access::token(c, read)?.unwrap().revoked_at, None);
            assert_eq!(access::token(c, admin)?.unwrap().revoked_at, Some(7));
            assert!(access::token_for_auth(c, "adm", 8)?.is_none());
            assert!(access::token_for_auth(c, "r", 8)?.is_some());
            assert_eq!(access::remove_user(c, id, 9)?, UserRemoved::Done);
            assert_eq!(access::token(c, read)?.unwrap().revoked_at, Some(9));
            assert!(
                access::revoke_token(c, read, 10)?,
                "revoking again finds it"
            );
            assert_eq!(
                access::token(c, read)?.unwrap().revoked_at,
                Some(9),
                "the first revocation's time stays"
            );
            assert!(!access::revoke_token(c, 999, 10)?);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_new_password_ends_the_users_sessions() {
    let t = ledger();
    t.ledger
        .blocking(|c| {
            let user = NewUser {
                email: "u@example.com",
                password_hash: "old",
                role: Role::Maintainer,
            };
            let id = access::create_user(c, &user, 0)?.unwrap();
            access::create_session(c, &session(id, &[1; 32]), 0)?;
            access::add_reset_token(c, "u@example.com", &[2; 32], 0, 100)?.expect("a user");
            assert!(access::reset_password(c, &[2; 32], "new", 10)?);
            assert!(
                !access::reset_password(c, &[2; 32], "newer", 11)?,
                "used up"
            );
            assert!(access::session_for_auth(c, &[1; 32], 12, IDLE_MS)?.is_none());
            let creds = access::credentials(c, "u@example.com")?.unwrap();
            assert_eq!(creds.password_hash, "new");
            Ok(())
        })
        .unwrap();
}
