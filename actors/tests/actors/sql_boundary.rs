//! All SQL lives in `actors/src/ledger/`: everything else calls its typed functions. This test
//! reads the workspace's sources and fails on SQL (statement text or a rusqlite statement
//! call) anywhere else, so the rule cannot erode one handler at a time.

use std::path::{Path, PathBuf};

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

/// The `.rs` files under `dir`, at any depth.
pub(crate) fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every crate's own sources (not its tests or examples), from the workspace's `root`.
fn product_sources(root: &Path) -> Vec<PathBuf> {
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
    files
}

#[test]
fn no_sql_outside_the_ledger() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ledger = root.join("actors/src/ledger");
    let files = product_sources(root);
    let mut offenders = Vec::new();
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
        offenders.extend(hits);
    }
    assert!(
        offenders.is_empty(),
        "SQL outside actors/src/ledger/ (move it behind a ledger function):\n{}",
        offenders.join("\n")
    );
}

/// ARCHITECTURE.md's code map names every source file of the product (a `mod.rs` by its
/// folder), so a file added without a word on what it is for fails here, not in a reader's
/// search months later.
#[test]
fn the_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let files = product_sources(root);
    let unnamed: Vec<String> = files
        .iter()
        .filter(|file| {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            let folder = file
                .parent()
                .and_then(Path::file_name)
                .unwrap()
                .to_string_lossy()
                .to_string();
            match name.as_str() {
                // A crate's root is its entry in the map.
                "lib.rs" | "main.rs" => false,
                "mod.rs" => !map.contains(&format!("{folder}/")),
                _ => !map.contains(&name),
            }
        })
        .map(|file| file.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(
        unnamed.is_empty(),
        "ARCHITECTURE.md's code map does not name these files; say there what each is for:\n{}",
        unnamed.join("\n")
    );
}
