//! Folded stacks and flamegraphs (placeholder, being written).
