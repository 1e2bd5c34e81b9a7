//! The scrbench command line, shared by the `scrbench` binary and `cargo xtask`.
