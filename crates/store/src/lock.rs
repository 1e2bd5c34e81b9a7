//! Per-key locks as lease files that expire when their holder dies.
