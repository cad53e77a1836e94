//! Deployment logs: every Deployer's lines go through one group-commit writer, so many
//! deployments logging at once share transactions. Lines are redacted before they are queued,
//! and written in the order each deployment sent them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::process::Stream;
use super::redact::Redactor;
use crate::ledger::batch::{Batcher, WriteFn, Writer};
use crate::ledger::{Ledger, LedgerError, deployments};

/// One line of a deployment's log, already redacted.
pub struct LogLine {
    pub deployment: i64,
    pub stream: &'static str,
    pub line: String,
}

/// Lines waiting to be written, beyond which a deployment's lines are dropped (and counted).
const QUEUE: usize = 64 * 1024;
/// Lines written in one transaction at most.
const MAX_BATCH: usize = 1000;

/// The deployment log writer's handle, and the writer that must run for lines to be stored
/// (hosted by a `BatchWriter` in the actor tree).
pub fn writer(ledger: Ledger) -> (Batcher<LogLine>, Writer<LogLine, ()>) {
    let (handle, inbox) = Batcher::channel("deployment logs", QUEUE);
    let writer = Writer {
        ledger,
        name: "deployment logs",
        max_batch: MAX_BATCH,
        linger: None,
        write: write_lines(),
        inbox,
    };
    (handle, writer)
}

/// Writes a batch in one transaction. A batch that fails (a line of a deployment deleted
/// meanwhile) is written again line by line, so one deployment's bad line costs no other
/// deployment its lines.
fn write_lines() -> WriteFn<LogLine, ()> {
    Arc::new(|c: &mut Connection, lines: Vec<LogLine>| {
        let all = (|| {
            let tx = c.transaction()?;
            for l in &lines {
                deployments::append_log(&tx, l.deployment, l.stream, &l.line)?;
            }
            tx.commit()?;
            Ok::<_, LedgerError>(())
        })();
        if all.is_ok() {
            return lines.iter().map(|_| Ok(())).collect();
        }
        lines
            .iter()
            .map(|l| {
                deployments::append_log(c, l.deployment, l.stream, &l.line)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .collect()
    })
}

/// One deployment's log: redacts each line and queues it to the shared writer.
#[derive(Clone)]
pub struct LogSink {
    deployment: i64,
    redactor: Arc<Mutex<Redactor>>,
    writer: Batcher<LogLine>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    pub fn new(writer: Batcher<LogLine>, deployment: i64, redactor: Redactor) -> Self {
        Self {
            deployment,
            redactor: Arc::new(Mutex::new(redactor)),
            writer,
            dropped: Arc::default(),
        }
    }

    pub fn line(&self, stream: Stream, line: String) {
        self.queue(stream.as_str(), line);
    }

    pub fn system(&self, line: impl Into<String>) {
        self.queue("system", line.into());
    }

    /// A secret learnt after the log started: masked in every line queued from now on.
    pub fn redact(&self, secret: String) {
        self.redactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(secret);
    }

    fn queue(&self, stream: &'static str, line: String) {
        let line = self
            .redactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .line(&line);
        let queued = self.writer.later(LogLine {
            deployment: self.deployment,
            stream,
            line,
        });
        if queued.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (up to 10 s) until every line queued so far is stored, and says in the log how
    /// many lines were dropped because the writer was behind.
    pub async fn close(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                deployment = self.deployment,
                dropped,
                "deployment log lines were dropped: the log writer was behind"
            );
            self.queue(
                "system",
                format!("{dropped} log lines were dropped: the log writer was behind"),
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.writer.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                deployment = self.deployment,
                "the deployment's log lines were not all stored within 10 s"
            );
        }
    }
}
