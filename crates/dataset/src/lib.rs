//! Datasets: the paper's benchmark files and published outputs, fetched from its public repository
//! at a pinned commit or imported from a local copy, and verified file by file against digests
//! committed in `prompts/`. A file that fails verification is never written to its destination.
