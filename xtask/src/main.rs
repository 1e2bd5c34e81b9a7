//! `cargo xtask`: every `scrbench` command (`cargo xtask run --model mosaic-paper`), plus
//! development automation that only makes sense in a checkout:
//!
//! - `cargo xtask bench [--data DIR]`: builds the release binary and measures the runner
//!   (no-op rerun of a fully cached 675-item study; scheduling overhead of 225 items through a
//!   generator that sleeps 50 ms each). Prints a table; figures go to `BENCHMARKS.md` by hand.
//! - `cargo xtask bench-encoders [ARGS]`: our encoders against transformers on the same real-size
//!   random-weight checkpoints (`crates/encoders/src/bin/bench_encoders.rs`; needs the Python
//!   environment of `tools/parity/README.md`).
//! - `cargo xtask bench-detectors [ARGS]`: OWL-ViT and OWLv2 against transformers on the same
//!   real-size random-weight checkpoints and images (`crates/detectors/src/bin/bench_detectors.rs`).
//! - `cargo xtask bench-scores [--prompts IDS] [--seeds S]`: every paper metric over MOSAIC's
//!   published images with real-size random-weight checkpoints, scrbench against the paper-faithful
//!   Python reference, wall time and peak memory of both.
//! - `cargo xtask bench-slurm [--tasks 1,4] [--ms 200]`: a Slurm array of K tasks against one on a
//!   generator that sleeps per image (`bench_slurm.rs`; starts a throwaway single-node Slurm).
//! - `cargo xtask adapter setup|check|new|smoke NAME`: generation adapters' set-up, inspection,
//!   scaffolding and smoke test (`adapter.rs`; `adapters/README.md`, `docs/adding-a-model.md`).

mod adapter;
mod bench;
mod bench_slurm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "bench-scores") {
        return match bench::scores(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.get(1).is_some_and(|a| a == "bench-slurm") {
        return match bench_slurm::main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.get(1).is_some_and(|a| a == "adapter") {
        return adapter::main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "bench-encoders") {
        return bench::encoders(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "bench-detectors") {
        return bench::detectors(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "bench") {
        args.remove(1);
        return match bench::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    args[0] = "cargo xtask".into();
    scrbench::main_from(args)
}
