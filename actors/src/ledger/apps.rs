//! Apps: creating, finding, listing and removing them, with their newest deployment.
