//! An app's environment variables, sealed at rest.
