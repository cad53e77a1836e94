//! GitHub integrations and webhook deliveries.
