//! The `compose` generator: a deterministic synthetic scene with controlled identity collapse.
