//! The paper's benchmark loads, validates and expands.

mod common;

use benchmark::Benchmark;

#[test]
fn smoke() {
    let b = Benchmark::load(&common::dataset()).unwrap();
    println!("{} {} {}", b.name, b.subjects.len(), b.prompts.len());
    for p in &b.prompts {
        match benchmark::expand::expand(
            &b,
            p,
            benchmark::expand::PromptFormat::Placeholders {
                idip: Default::default(),
            },
        ) {
            Ok(m) => println!("{}: {}", p.id, m.text),
            Err(e) => println!("ERR {e}"),
        }
    }
}
