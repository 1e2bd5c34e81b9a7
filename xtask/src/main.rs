//! `cargo xtask`: the scrbench commands plus development automation.
fn main() {}
