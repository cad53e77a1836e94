//! How the API and the dashboard read deployments, their logs and the live release.
