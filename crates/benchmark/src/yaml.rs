//! Loader for scrbench's own YAML benchmark format (see `prompts/README.md`).
