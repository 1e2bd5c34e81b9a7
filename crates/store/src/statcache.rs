//! A cache of file digests keyed by file metadata, to avoid re-hashing unchanged large files.
