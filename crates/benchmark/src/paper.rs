//! Loader for the paper's `prompts_50.txt` format (DESIGN §1).
