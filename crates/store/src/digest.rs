//! SHA-256 digests, shown and stored as lower-case hex.
