//! Wire types and a typed client for /api/v1.
