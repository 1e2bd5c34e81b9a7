//! The `replay` generator: published images from a folder in the paper's layout.
