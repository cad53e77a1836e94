//! The compose corpus benchmark: imports every project under a folder (default
//! `tests/fixtures/compose`) through detection, and times the largest one.
//!
//! Prints `key=value` lines for `scripts/bench`:
//! `corpus_total`, `corpus_passed`, `corpus_mismatches` (names), `largest_name`,
//! `largest_bytes`, `largest_median_ms`, `largest_max_ms`.

use std::path::PathBuf;

use rustploy_actors::deploy::corpus;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/compose"
    ));
    let mut rounds = 50usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir needs a folder")),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds needs a number")
            }
            other => {
                eprintln!("unknown argument {other}; use --dir DIR --rounds N");
                std::process::exit(2);
            }
        }
    }
    let outcomes = match corpus::check_dir(&dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let failed: Vec<&corpus::Outcome> = outcomes.iter().filter(|o| o.mismatch.is_some()).collect();
    for o in &failed {
        eprintln!("{}: {}", o.name, o.mismatch.as_deref().unwrap_or_default());
    }
    println!("corpus_total={}", outcomes.len());
    println!("corpus_passed={}", outcomes.len() - failed.len());
    println!(
        "corpus_mismatches={}",
        failed
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let Some(largest) = outcomes.iter().max_by_key(|o| o.bytes) else {
        return;
    };
    let root = dir.join(&largest.name);
    let mut times: Vec<f64> = (0..rounds.max(1))
        .map(|_| corpus::time_one(&root).as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    println!("largest_name={}", largest.name);
    println!("largest_bytes={}", largest.bytes);
    println!("largest_median_ms={:.2}", times[times.len() / 2]);
    println!("largest_max_ms={:.2}", times[times.len() - 1]);
}
