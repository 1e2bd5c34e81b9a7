//! `cargo xtask adapter setup|check|new|smoke NAME`: generation adapters' set-up, inspection,
//! scaffolding and smoke test. The work is done by `adapters/scrbench_setup.py` (Python standard
//! library only: the adapters are Python, and their venvs, pip and huggingface_hub are driven from
//! Python anyway); this forwards the arguments to it with the interpreter from
//! `SCRBENCH_SETUP_PYTHON` or `python3`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask adapter setup|check|new|smoke NAME [OPTIONS]
  setup NAME [--smoke] [--no-weights] [--cache DIR] [--python PY] [--repo-from DIR]
  check NAME [--smoke] [--cache DIR]
  new NAME [--dir DIR]
  smoke NAME [--cache DIR] [--python PY] [-- CONTRACT-ARGS]
(see adapters/README.md and docs/adding-a-model.md)";

pub fn main(args: &[OsString]) -> ExitCode {
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") && args.len() == 1 {
        eprintln!("{USAGE}");
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters/scrbench_setup.py");
    let python = std::env::var_os("SCRBENCH_SETUP_PYTHON").unwrap_or_else(|| "python3".into());
    match Command::new(&python).arg(&script).args(args).status() {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(error) => {
            eprintln!(
                "error: cannot run {} {}: {error} (set SCRBENCH_SETUP_PYTHON to a Python 3 interpreter)",
                python.to_string_lossy(),
                script.display()
            );
            ExitCode::FAILURE
        }
    }
}
