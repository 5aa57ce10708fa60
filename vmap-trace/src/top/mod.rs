//! The live view (placeholder, being written).
