//! Domains and the routes RouterSync serves from them.
