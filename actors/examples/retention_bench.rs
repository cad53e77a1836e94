//! The retention sweep on a large ledger, and what it costs the requests that run meanwhile.
//!
//! ```text
//! cargo run --release -p rustploy-actors --example retention_bench -- [--rows N] [--live L]
//!     [--every-ms M]
//! ```
//!
//! Opens a real [`Ledger`] on a temporary file and fills `token_audit_events` with N rows
//! (default 1,000,000) older than the 90 days audit retention keeps, and L recent ones
//! (default 10,000) that must stay. Then it runs [`retention::sweep`] with the default
//! settings while another thread, every M ms (default 2), makes one small write transaction
//! (an audit insert, as a token request does) and one read, each timed from the call to its
//! end: the wait a request would see.
//!
//! Results go to stdout as `key=value` lines that `scripts/bench` turns into table rows; the
//! progress story goes to stderr. Timing is only reported, never asserted; the rows that must
//! stay are checked, and a wrong count fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{TransactionBehavior, params};
use rustploy_actors::ledger::retention::{self, RetentionConfig};
use rustploy_actors::ledger::{Ledger, LedgerConfig, now_ms};

struct Options {
    rows: i64,
    live: i64,
    every: Duration,
}

fn parse_args() -> Options {
    let mut o = Options {
        rows: 1_000_000,
        live: 10_000,
        every: Duration::from_millis(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            "--rows" => o.rows = value("--rows").parse().expect("--rows N"),
            "--live" => o.live = value("--live").parse().expect("--live L"),
            "--every-ms" => {
                o.every = Duration::from_millis(value("--every-ms").parse().expect("--every-ms M"))
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Waits observed by the concurrent requests, in microseconds.
#[derive(Default)]
struct Waits {
    writes: Vec<u64>,
    reads: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = parse_args();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ledger =
        Ledger::open(&dir.path().join("bench.db"), &LedgerConfig::default()).expect("the ledger");
    let now = now_ms();
    let old = now - 200 * 86_400_000;

    eprintln!("seeding {} expired and {} live audit rows", o.rows, o.live);
    let seeded = Instant::now();
    ledger
        .blocking(|c| {
            c.execute(
                "INSERT INTO api_tokens (id, public_id, name, secret_hash, scopes, created_at)
                 VALUES (1, 'bench', 'bench', x'00', 'admin', 0)",
                [],
            )?;
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO token_audit_events (token_id, method, path, status, client_addr, at)
                     VALUES (1, 'GET', '/api/v1/apps/shop/deployments', 200, '203.0.113.7', ?1)",
                )?;
                for i in 0..o.rows {
                    insert.execute([old + i])?;
                }
                for i in 0..o.live {
                    insert.execute([now - 1_000 - i])?;
                }
            }
            tx.commit()?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
            Ok(())
        })
        .expect("seeding");
    let size_before = std::fs::metadata(dir.path().join("bench.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "seeded in {} ms ({} MB)",
        seeded.elapsed().as_millis(),
        size_before / 1_000_000
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (ledger, stop, every) = (ledger.clone(), stop.clone(), o.every);
        std::thread::spawn(move || {
            let mut waits = Waits::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                ledger
                    .blocking(|c| {
                        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        tx.execute(
                            "INSERT INTO token_audit_events (token_id, method, path, status, at)
                             VALUES (1, 'POST', '/api/v1/apps/shop/deployments', 202, ?1)",
                            [now_ms()],
                        )?;
                        tx.commit()?;
                        Ok(())
                    })
                    .expect("a concurrent write");
                waits.writes.push(t.elapsed().as_micros() as u64);
                let t = Instant::now();
                ledger
                    .blocking(|c| {
                        Ok(c.query_row(
                            "SELECT COUNT(*) FROM token_audit_events WHERE token_id = 1 AND id > ?1",
                            params![i64::MAX - 1],
                            |r| r.get::<_, i64>(0),
                        )?)
                    })
                    .expect("a concurrent read");
                waits.reads.push(t.elapsed().as_micros() as u64);
                std::thread::sleep(every);
            }
            waits
        })
    };
    // Let the load settle before the sweep starts.
    std::thread::sleep(Duration::from_millis(200));

    eprintln!("sweeping");
    let config = RetentionConfig::default();
    let started = Instant::now();
    let swept = ledger
        .blocking(|c| retention::sweep(c, &config, now_ms()))
        .expect("the sweep");
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut waits = load.join().expect("the load thread");

    let (left, size_after) = ledger
        .blocking(|c| {
            let n: i64 =
                c.query_row("SELECT COUNT(*) FROM token_audit_events", [], |r| r.get(0))?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
            Ok(n)
        })
        .map(|n| {
            let size = std::fs::metadata(dir.path().join("bench.db"))
                .map(|m| m.len())
                .unwrap_or(0);
            (n, size)
        })
        .expect("counting what is left");
    let expected = o.live + waits.writes.len() as i64;
    if swept.audit_events as i64 != o.rows || left != expected {
        eprintln!(
            "WRONG: the sweep deleted {} rows (expected {}), {left} are left (expected {expected})",
            swept.audit_events, o.rows
        );
        std::process::exit(1);
    }
    waits.writes.sort_unstable();
    waits.reads.sort_unstable();
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    println!("rows={}", o.rows);
    println!("live={}", o.live);
    println!("sweep_ms={}", took.as_millis());
    println!("deleted={}", swept.audit_events);
    println!("batches={}", swept.batches);
    println!("pages_freed={}", swept.pages);
    println!("size_before_mb={}", size_before / 1_000_000);
    println!("size_after_mb={}", size_after / 1_000_000);
    println!("writes={}", waits.writes.len());
    println!("write_max_ms={}", ms(*waits.writes.last().unwrap_or(&0)));
    println!("write_p99_ms={}", ms(percentile(&waits.writes, 0.99)));
    println!("write_p50_ms={}", ms(percentile(&waits.writes, 0.50)));
    println!("read_max_ms={}", ms(*waits.reads.last().unwrap_or(&0)));
    println!("every_ms={}", o.every.as_millis());
}
