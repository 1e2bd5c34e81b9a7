//! Helpers shared by the integration tests: where the paper's dataset copy lives.

use std::path::PathBuf;

/// `../shared/datasets/p13n-workshop` beside the repository root (read-only, never committed).
pub fn dataset() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/p13n-workshop")
}

/// The paper's benchmark folder.
pub fn val_dataset() -> PathBuf {
    dataset().join("val_dataset")
}
