//! Checks a folder of example projects against what each should import as: one project per
//! sub-folder, with an `expect.json` beside its files:
//!
//! ```json
//! { "service": "web", "port": 8080, "warning": "a fragment of one warning" }
//! { "error": "a fragment of the refusal's message" }
//! ```
//!
//! `"port": null` expects no port. The test suite runs it over `tests/fixtures/compose/`, and
//! the benchmark reports its import rate and time.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::detect;

/// What one project should import as.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub service: Option<String>,
    /// `Some(None)`: the import must name no port.
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Option<u16>>,
    pub warning: Option<String>,
    pub error: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u16>>, D::Error> {
    Option::<u16>::deserialize(d).map(Some)
}

/// How one project imported.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    /// What differs from the expectation; `None` when it imported as expected.
    pub mismatch: Option<String>,
    pub elapsed: Duration,
    /// The size of the project's files, in bytes.
    pub bytes: u64,
}

/// Imports every project under `dir` (sorted by name) and compares it with its expectation.
pub fn check_dir(dir: &Path) -> Result<Vec<Outcome>, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| check_one(&dir.join(&name), name))
        .collect())
}

/// Imports the project at `root` once, and says how long detection took.
pub fn time_one(root: &Path) -> Duration {
    let start = Instant::now();
    let _ = detect::detect(root, None);
    start.elapsed()
}

fn check_one(root: &Path, name: String) -> Outcome {
    let bytes = dir_bytes(root);
    let expect: Result<Expectation, String> = std::fs::read_to_string(root.join("expect.json"))
        .map_err(|e| format!("expect.json: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("expect.json: {e}")));
    let start = Instant::now();
    let got = detect::detect(root, None);
    let elapsed = start.elapsed();
    let mismatch = match expect {
        Err(e) => Some(e),
        Ok(expect) => compare(&expect, got),
    };
    Outcome {
        name,
        mismatch,
        elapsed,
        bytes,
    }
}

fn compare(
    expect: &Expectation,
    got: Result<detect::Detection, detect::DetectError>,
) -> Option<String> {
    match (got, &expect.error) {
        (Err(e), Some(fragment)) => {
            let message = e.to_string();
            (!message.contains(fragment.as_str())).then(|| {
                format!("refused with \"{message}\", expected a refusal with \"{fragment}\"")
            })
        }
        (Err(e), None) => Some(format!("refused: {e}")),
        (Ok(d), Some(fragment)) => Some(format!(
            "imported ({} on {:?}), expected a refusal with \"{fragment}\"",
            d.routed_service, d.port
        )),
        (Ok(d), None) => {
            let mut wrong = Vec::new();
            if let Some(s) = &expect.service
                && *s != d.routed_service
            {
                wrong.push(format!("service {} (expected {s})", d.routed_service));
            }
            if let Some(p) = expect.port
                && p != d.port
            {
                wrong.push(format!("port {:?} (expected {p:?})", d.port));
            }
            if let Some(w) = &expect.warning
                && !d.warnings.iter().any(|x| x.contains(w.as_str()))
            {
                wrong.push(format!("no warning with \"{w}\" in {:?}", d.warnings));
            }
            (!wrong.is_empty()).then(|| format!("{}; reasons: {:?}", wrong.join(", "), d.reasons))
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every project of the corpus imports as its `expect.json` says; all mismatches at once.
    #[test]
    fn the_compose_corpus_imports_as_its_authors_meant() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/compose");
        let outcomes = check_dir(&dir).unwrap();
        assert!(outcomes.len() >= 30, "only {} projects", outcomes.len());
        let wrong: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.mismatch.as_ref().map(|m| format!("{}: {m}", o.name)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} projects import wrongly:\n{}",
            wrong.len(),
            outcomes.len(),
            wrong.join("\n")
        );
    }
}
