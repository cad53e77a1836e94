//! Every statement in `actors/src/ledger/` through SQLite's query planner on a migrated ledger.
//! A statement must find its rows in a table that grows with use (deliveries, deployments,
//! logs, jobs, the audit log, heartbeats) through an index, unless it is a sweep or a count
//! named below with the reason it may read the table. One statement that SQLite answered
//! through the wrong index made every webhook delivery read every delivery kept; this test
//! keeps that class of slowdown from coming back one query at a time.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;

use crate::helpers;

/// Tables whose rows grow with use, bounded only by retention.
const GROWING: &[&str] = &[
    "webhook_deliveries",
    "deployments",
    "deployment_logs",
    "jobs",
    "token_audit_events",
    "agent_heartbeats",
    "agent_transitions",
    "service_backups",
    "sessions",
];

/// Statements allowed to read a growing table whole, by a piece of their text, and why.
const SWEEPS: &[(&str, &str)] = &[
    (
        "SELECT state, COUNT(*) FROM deployments GROUP BY state",
        "the metrics' counts, once per scrape",
    ),
    (
        "SELECT state, COUNT(*) FROM jobs GROUP BY state",
        "the metrics' counts, once per scrape",
    ),
    (
        "JOIN (SELECT MAX(id) AS id FROM deployments GROUP BY app_id) newest",
        "the app list's newest deployments: one pass over the app index, which retention \
         bounds per app, beats a search per app",
    ),
    (
        "FROM deployments GROUP BY app_id HAVING COUNT(*) > ?1",
        "the retention sweep",
    ),
    (
        "FROM webhook_deliveries w WHERE w.outcome IN ('deployed', 'ignored') AND w.received_at < ?1",
        "the retention sweep",
    ),
    ("DELETE FROM sessions WHERE id IN", "the retention sweep"),
    (
        "DELETE FROM agent_transitions WHERE id IN",
        "the retention sweep",
    ),
    (
        "UPDATE service_backups SET state = ?2, finished_at = ?1, reason = 'interrupted",
        "once at start-up, for backups a stop interrupted",
    ),
    (
        "DELETE FROM users WHERE id = ?1",
        "deleting a user clears its audit rows' reference: rare, and done by an admin",
    ),
];

/// A statement's text from a Rust string literal that starts at `text` (just after its opening
/// quote): escapes resolved, line continuations joined.
fn literal(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('\n') => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// The product statements of the ledger's sources (not their unit tests), each with where it
/// starts. Format strings (with `{}`) cannot be planned as they stand and are left out, and so
/// is the migration's edit of `sqlite_schema` (writable only under `writable_schema`).
fn statements() -> Vec<(String, String)> {
    let mut files = Vec::new();
    crate::sql_boundary::sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ledger"),
        &mut files,
    );
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let whole = std::fs::read_to_string(&file).unwrap();
        let text = whole.split("#[cfg(test)]").next().unwrap_or_default();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for start in [
            "\"SELECT ",
            "\"INSERT ",
            "\"UPDATE ",
            "\"DELETE ",
            "\"WITH ",
        ] {
            for (at, _) in text.match_indices(start) {
                let rest = &text[at + 1..];
                let sql = if text[..at].ends_with("r#") {
                    rest[..rest.find("\"#").unwrap()].to_string()
                } else {
                    literal(rest)
                };
                // The migration's edit of the schema itself is only writable in its migration.
                if sql.contains('{') || sql.starts_with("UPDATE sqlite_schema") {
                    continue;
                }
                let line = text[..at].lines().count();
                // One line, without SQL comments, so the sweeps' texts match however it wraps.
                let sql = sql
                    .lines()
                    .map(|l| l.split("--").next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push((format!("{name}:{line}"), sql));
            }
        }
    }
    out
}

/// The plan's lines for `sql`, with its parameters left unbound.
fn plan(c: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut q = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let mut rows = q.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(r.get::<_, String>(3)?);
    }
    Ok(out)
}

/// The table each name in `sql`'s FROM and JOIN clauses stands for (a table stands for itself).
fn aliases(sql: &str) -> HashMap<String, String> {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        if !(w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("JOIN")) {
            continue;
        }
        let Some(table) = words.get(i + 1) else {
            continue;
        };
        out.insert(table.to_string(), table.to_string());
        let mut next = i + 2;
        if words
            .get(next)
            .is_some_and(|w| w.eq_ignore_ascii_case("AS"))
        {
            next += 1;
        }
        if let Some(alias) = words
            .get(next)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            out.insert(alias.to_string(), table.to_string());
        }
    }
    out
}

/// Indexes with a WHERE clause: reading one whole reads only the rows it holds.
fn partial_indexes(c: &Connection) -> Vec<String> {
    let mut q = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Why `line` of `sql`'s plan reads a growing table whole, if it does.
fn reads_whole(
    line: &str,
    sql: &str,
    aliases: &HashMap<String, String>,
    partial: &[String],
) -> Option<String> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let name = words.next()?;
    let table = aliases.get(name).map_or(name, String::as_str);
    if !GROWING.contains(&table) {
        return None;
    }
    let index = line
        .split(" INDEX ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next());
    if index.is_some_and(|i| partial.iter().any(|p| p == i)) {
        return None;
    }
    if verb == "SCAN" {
        return Some(format!("reads {table} whole"));
    }
    // A search whose only key is a column the statement asks to be NULL: on a nullable
    // reference that matches nearly every row, so it is a scan by another name.
    if verb == "SEARCH" && line.ends_with("=?)") && !line.contains(" AND ") {
        let key = line.rsplit('(').next()?.trim_end_matches("=?)");
        let null = format!("{key} IS NULL");
        let equal = [format!("{key} = "), format!("{key}=")];
        if sql.contains(&null) && !equal.iter().any(|e| sql.contains(e.as_str())) {
            return Some(format!("searches {table} only by {key} IS NULL"));
        }
    }
    None
}

#[test]
fn no_statement_reads_a_growing_table_whole() {
    let t = helpers::ledger();
    let found = statements();
    assert!(
        found.len() > 150,
        "only {} statements found in the ledger's sources: did the way they are written change?",
        found.len()
    );
    let mut offenders = Vec::new();
    let mut sweeps_seen = vec![false; SWEEPS.len()];
    t.ledger
        .blocking(|c| {
            let partial = partial_indexes(c);
            for (at, sql) in &found {
                let lines = plan(c, sql).unwrap_or_else(|e| panic!("{at}: {e}\n{sql}"));
                let names = aliases(sql);
                let whole: Vec<String> = lines
                    .iter()
                    .filter_map(|l| reads_whole(l, sql, &names, &partial))
                    .collect();
                if whole.is_empty() {
                    continue;
                }
                match SWEEPS.iter().position(|(text, _)| sql.contains(text)) {
                    Some(i) => sweeps_seen[i] = true,
                    None => offenders.push(format!("{at}: {}\n    {sql}", whole.join("; "))),
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        offenders.is_empty(),
        "statements that read a growing table whole (add an index, or name a sweep in SWEEPS \
         with the reason):\n{}",
        offenders.join("\n")
    );
    let stale: Vec<&str> = SWEEPS
        .iter()
        .zip(&sweeps_seen)
        .filter(|(_, seen)| !**seen)
        .map(|((text, _), _)| *text)
        .collect();
    assert!(
        stale.is_empty(),
        "SWEEPS names statements that no longer read a table whole (remove them): {stale:?}"
    );
}

/// Every statement, run three times with every parameter bound: none may be prepared again on
/// a run (SQLite does that each time a bound value it planned with is bound again, which costs
/// as much as the statement's work or more). Runs in a transaction that is rolled back.
#[test]
fn no_statement_is_prepared_again_on_every_run() {
    let t = helpers::ledger();
    let found = statements();
    let mut offenders = Vec::new();
    t.ledger
        .blocking(|c| {
            let tx = c.unchecked_transaction()?;
            for (at, sql) in &found {
                let mut again = 0;
                for _ in 0..3 {
                    let mut s = tx
                        .prepare_cached(sql)
                        .unwrap_or_else(|e| panic!("{at}: {e}\n{sql}"));
                    for i in 1..=s.parameter_count() {
                        s.raw_bind_parameter(i, 1i64)?;
                    }
                    // Its outcome does not matter (a constraint may refuse the 1s): the step is
                    // where an expired statement is prepared again.
                    let _ = s.raw_query().next();
                    again = s.get_status(rusqlite::StatementStatus::RePrepare);
                }
                if again > 0 {
                    offenders.push(format!("{at}: prepared again {again} times\n    {sql}"));
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        offenders.is_empty(),
        "statements SQLite prepares again on every run (write a bound LIMIT or OFFSET as \
         CAST(?n AS INTEGER), and a value compared with a partial index's as a literal):\n{}",
        offenders.join("\n")
    );
}
