//! Users, sessions, API tokens, password resets and the token audit log.
