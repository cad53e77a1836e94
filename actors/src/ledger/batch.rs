//! Group commit: many small writes share one transaction.
