//! Study configuration, stages and the resumable runner.
