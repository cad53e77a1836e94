//! All SQL lives in `actors/src/ledger/`: everything else calls its typed functions. This test
//! reads the workspace's sources and fails on SQL (statement text or a rusqlite statement
//! call) anywhere else, so the rule cannot erode one handler at a time.

use std::path::{Path, PathBuf};

/// Files that still hold SQL of their own, each to be moved behind `ledger/` functions. The
/// list only shrinks: a file that no longer needs its entry fails the test until the entry
/// goes, and a new file with SQL fails it at once.
const NOT_YET_MOVED: &[&str] = &[
    "server/src/http/dashboard/apps.rs",
    "server/src/http/dashboard/services.rs",
    "server/src/http/dashboard/system.rs",
    "server/src/http/ops.rs",
    "server/src/http/services_api.rs",
];

/// What counts as SQL outside the ledger: statement text (every statement here starts a
/// string literal), and the rusqlite calls that only ever take SQL.
const MARKERS: &[&str] = &[
    "\"SELECT ",
    "\"INSERT ",
    "\"UPDATE ",
    "\"DELETE ",
    "\"WITH ",
    "\"CREATE ",
    "\"PRAGMA ",
    ".prepare_cached(",
    ".execute_batch(",
    ".pragma_update(",
    ".pragma_query_value(",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_sql_outside_the_ledger() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ledger = root.join("actors/src/ledger");
    let mut files = Vec::new();
    for crate_src in [
        "actors/src",
        "server/src",
        "agent/src",
        "tui/src",
        "api/src",
    ] {
        sources(&root.join(crate_src), &mut files);
    }
    for entry in NOT_YET_MOVED {
        assert!(
            root.join(entry).is_file(),
            "{entry} is listed but does not exist"
        );
    }
    let mut offenders = Vec::new();
    let mut cleared = Vec::new();
    for file in files {
        if file.starts_with(&ledger) {
            continue;
        }
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        // A file's own unit tests may seed a ledger by hand.
        let product = text.split("#[cfg(test)]").next().unwrap_or_default();
        let hits: Vec<String> = product
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim_start().starts_with("//"))
            .filter(|(_, line)| MARKERS.iter().any(|m| line.contains(m)))
            .map(|(n, line)| format!("{rel}:{}: {}", n + 1, line.trim()))
            .collect();
        let allowed = NOT_YET_MOVED.contains(&rel.as_str());
        match (hits.is_empty(), allowed) {
            (false, false) => offenders.extend(hits),
            (true, true) => cleared.push(rel),
            _ => {}
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside actors/src/ledger/ (move it behind a ledger function):\n{}",
        offenders.join("\n")
    );
    assert!(
        cleared.is_empty(),
        "these files hold no SQL any more: remove them from NOT_YET_MOVED: {cleared:?}"
    );
}
