//! `scrbench`: the installable command line (`cargo install --path crates/scrbench`).

fn main() -> std::process::ExitCode {
    scrbench::main_from(std::env::args_os())
}
