//! The production daemon (placeholder, being written).
