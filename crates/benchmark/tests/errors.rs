//! Every load and expansion error names the file and line: small bad benchmarks written into a
//! temporary folder, with a few images copied from the shared dataset.

mod common;

use std::path::Path;

use benchmark::expand::{IdipPolicy, PromptFormat, expand};
use benchmark::{Benchmark, Location, Prompt, Scene};
use expect_test::{Expect, expect};

const IMAGES: [&str; 4] = ["dog.jpg", "panda.jpg", "cup.jpg", "bowl.png"];

/// A folder with the four images and `name` holding `text`.
fn fixture(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for image in IMAGES {
        std::fs::copy(common::val_dataset().join(image), dir.path().join(image)).unwrap();
    }
    std::fs::write(dir.path().join(name), text).unwrap();
    dir
}

/// Loads `name` from `dir` and checks the error message, the folder shown as `<dir>`.
fn check(dir: &Path, name: &str, expected: Expect) {
    let err = Benchmark::load(&dir.join(name)).expect_err("the benchmark is invalid");
    let canonical = std::fs::canonicalize(dir).unwrap();
    let message = err
        .to_string()
        .replace(&canonical.display().to_string(), "<dir>")
        .replace(&dir.display().to_string(), "<dir>");
    expected.assert_eq(&message);
}

const HEADER: &str = "\
Test prompts
============
3 prompts | 2 subjects

Reference subjects
  People  (0):
  Animals (2):  dog, panda
  Objects (2):  cup,
                bowl

================================================================================
2-SUBJECT PROMPTS  (#01 – #15)
================================================================================
";

fn paper(body: &str) -> String {
    format!("{HEADER}\nNo interaction\n\n{body}")
}

const GOOD_BODY: &str = "\
#01  [dog · panda]
A dog beside a panda.

#02  [cup · bowl]
A cup inside a bowl.

#03  [dog · cup]
A dog sniffing a cup.
";

#[test]
fn good_fixture_loads() {
    let dir = fixture("prompts.txt", &paper(GOOD_BODY));
    let bench = Benchmark::load(&dir.path().join("prompts.txt")).unwrap();
    assert_eq!(bench.name, "prompts");
    let ids: Vec<_> = bench
        .prompts
        .iter()
        .map(|p| (p.id.as_str(), p.location.line))
        .collect();
    assert_eq!(
        ids,
        [
            ("01_no_interaction", 17),
            ("02_no_interaction", 20),
            ("03_no_interaction", 23)
        ]
    );
    assert!(bench.subjects.iter().all(|s| s.image.is_absolute()));
}

#[test]
fn paper_unknown_subject() {
    let dir = fixture(
        "prompts.txt",
        &paper(&GOOD_BODY.replace("#03  [dog · cup]", "#03  [dog · hamster]")),
    );
    check(
        dir.path(),
        "prompts.txt",
        expect!["<dir>/prompts.txt:23: unknown subject `hamster`"],
    );
}

#[test]
fn paper_subject_count_and_repeated_subject() {
    let body = GOOD_BODY
        .replace("#02  [cup · bowl]", "#02  [cup · bowl · dog]")
        .replace("#03  [dog · cup]", "#03  [dog · dog]");
    let dir = fixture("prompts.txt", &paper(&body));
    check(
        dir.path(),
        "prompts.txt",
        expect![[r#"
        <dir>/prompts.txt:20: prompt `02_no_interaction` lists 3 subjects but its text or header says 2
        <dir>/prompts.txt:23: prompt `03_no_interaction` lists subject `dog` more than once"#]],
    );
}

#[test]
fn paper_duplicate_prompt_and_subject() {
    let text = paper(&GOOD_BODY.replace("#03", "#02"))
        .replace("cup,\n", "cup, dog,\n")
        .replace("(2):  cup", "(3):  cup");
    let dir = fixture("prompts.txt", &text);
    check(
        dir.path(),
        "prompts.txt",
        expect![[r#"
        <dir>/prompts.txt:8: duplicate subject `dog` (first defined at <dir>/prompts.txt:7)
        <dir>/prompts.txt:23: duplicate prompt id `02_no_interaction` (first defined at <dir>/prompts.txt:20)"#]],
    );
}

#[test]
fn paper_syntax_errors() {
    let body = GOOD_BODY
        .replace("#02  [cup · bowl]", "#02  cup, bowl")
        .replace(
            "A dog sniffing a cup.\n",
            "\nOcclusion\n\n#04  [dog · cup]\n\n",
        );
    let text = paper(&body).replace("Animals (2)", "Animals (3)");
    let dir = fixture("prompts.txt", &text);
    check(
        dir.path(),
        "prompts.txt",
        expect![[r#"
        <dir>/prompts.txt:3: the header declares 3 prompts but the file has 1
        <dir>/prompts.txt:7: the Animal group declares 3 subjects but lists 2
        <dir>/prompts.txt:20: malformed entry `#02  cup, bowl` (expected `#NN  [subject · subject · …]`)
        <dir>/prompts.txt:23: entry has no prompt text (expected on the next non-empty line)
        <dir>/prompts.txt:27: entry has no prompt text (expected on the next non-empty line)"#]],
    );
}

#[test]
fn paper_missing_and_undecodable_images() {
    let dir = fixture("prompts.txt", &paper(GOOD_BODY));
    std::fs::remove_file(dir.path().join("panda.jpg")).unwrap();
    std::fs::write(dir.path().join("cup.jpg"), b"not a jpeg").unwrap();
    check(
        dir.path(),
        "prompts.txt",
        expect![[r#"
        <dir>/prompts.txt:7: no image for subject `panda` in <dir> (no file whose normalised stem is `panda`)
        <dir>/prompts.txt:8: image of subject `cup` cannot be decoded (<dir>/cup.jpg): Format error decoding Jpeg: Error parsing image. Illegal start bytes:6E6F"#]],
    );
}

const YAML: &str = "\
name: test
images: .
subjects:
  - {name: dog, kind: animal, image: dog.jpg}
  - name: panda
    kind: animal
    image: panda.jpg
  - {name: cup, kind: object, image: cup.jpg}
prompts:
  - id: one
    scene: no_interaction
    subjects: [dog, panda]
    text: A dog beside a panda.
  - id: two
    scene: occlusion
    count: 2
    subjects:
      - cup
      - dog
    text: A cup hiding a dog.
";

#[test]
fn yaml_good_fixture_loads() {
    let dir = fixture("b.yaml", YAML);
    let bench = Benchmark::load(&dir.path().join("b.yaml")).unwrap();
    let prompts: Vec<_> = bench
        .prompts
        .iter()
        .map(|p| (p.id.as_str(), p.scene, p.location.line))
        .collect();
    assert_eq!(
        prompts,
        [("one", Scene::Neutral, 10), ("two", Scene::Occlusion, 14)]
    );
}

#[test]
fn yaml_syntax_error() {
    let dir = fixture("b.yml", &YAML.replace("    count: 2", "    cuont: 2"));
    check(
        dir.path(),
        "b.yml",
        expect![
            "<dir>/b.yml:16: column 5: unknown field `cuont`, expected one of id, scene, subjects, count, text"
        ],
    );
    let dir = fixture(
        "b.yml",
        &YAML.replace("scene: occlusion", "scene: [occlusion"),
    );
    check(
        dir.path(),
        "b.yml",
        expect!["<dir>/b.yml:15: column 12: externally tagged enum expected scalar or mapping"],
    );
}

#[test]
fn yaml_semantic_errors() {
    let yaml = YAML
        .replace("      - dog\n", "      - hamster\n")
        .replace("  - id: two", "  - id: one")
        .replace("name: panda", "name: dog")
        .replace("image: cup.jpg", "image: nope/cup.jpg")
        .replace(
            "    subjects: [dog, panda]",
            "    subjects: [dog, cup]\n    count: 3",
        );
    let dir = fixture("b.yaml", &yaml);
    std::fs::write(dir.path().join("dog.jpg"), b"GIF89a").unwrap();
    check(
        dir.path(),
        "b.yaml",
        expect![[r#"
        <dir>/b.yaml:4: image of subject `dog` cannot be decoded (<dir>/dog.jpg): The image format Gif is not supported
        <dir>/b.yaml:5: duplicate subject `dog` (first defined at <dir>/b.yaml:4)
        <dir>/b.yaml:8: image of subject `cup` is missing: <dir>/nope/cup.jpg
        <dir>/b.yaml:10: prompt `one` lists 2 subjects but its text or header says 3
        <dir>/b.yaml:15: duplicate prompt id `one` (first defined at <dir>/b.yaml:10)
        <dir>/b.yaml:20: unknown subject `hamster`"#]],
    );
}

#[test]
fn not_a_benchmark() {
    let dir = fixture("b.json", "{}");
    check(
        dir.path(),
        "b.json",
        expect![
            "<dir>/b.json: not a benchmark: expected a .txt, .yaml or .yml file or a dataset folder"
        ],
    );
    check(
        dir.path(),
        "",
        expect![
            "<dir>/: not a benchmark: a folder without `val_dataset/prompts_50.txt` or `prompts_50.txt`"
        ],
    );
    check(
        dir.path(),
        "absent.yaml",
        expect!["<dir>/absent.yaml: cannot read: No such file or directory (os error 2)"],
    );
}

#[test]
fn expand_not_mentioned() {
    let dir = fixture(
        "b.yaml",
        &YAML.replace("A cup hiding a dog.", "A cup hiding a puppy."),
    );
    let bench = Benchmark::load(&dir.path().join("b.yaml")).unwrap();
    let prompt = bench.prompt("two").unwrap();
    let err = expand(
        &bench,
        prompt,
        PromptFormat::Placeholders {
            idip: IdipPolicy::PeopleOnly,
        },
    )
    .unwrap_err();
    let message = err
        .to_string()
        .replace(&dir.path().display().to_string(), "<dir>");
    expect!["<dir>/b.yaml:14: prompt `two`: subject `dog` is not mentioned in the text, so it has no ENT placeholder"].assert_eq(&message);
    assert!(
        expand(&bench, prompt, PromptFormat::Plain).is_ok(),
        "only placeholders need mentions"
    );

    let stray = Prompt {
        id: "x".into(),
        scene: Scene::Neutral,
        text: "A cat.".into(),
        subjects: vec!["cat".into()],
        location: Location {
            file: "x.yaml".into(),
            line: 3,
        },
    };
    let err = expand(&bench, &stray, PromptFormat::Plain).unwrap_err();
    expect!["x.yaml:3: prompt `x`: subject `cat` is not in the benchmark"]
        .assert_eq(&err.to_string());
}

#[test]
fn placeholders_prefer_longest_names_and_first_mentions() {
    let names = ["bowl", "berry bowl", "old man", "Siamese cat"];
    let subjects = [
        "bowl".to_owned(),
        "old man".to_owned(),
        "Siamese cat".to_owned(),
    ];
    let text =
        "A berry bowl by the Old Man's bowl; the old man pets a siamese cat, and the bowl tips.";
    let out = benchmark::expand::placeholders(text, &subjects, &names).unwrap();
    assert_eq!(
        out,
        "A berry bowl by the ENT2's ENT1; the old man pets a ENT3, and the bowl tips."
    );
    assert_eq!(
        benchmark::expand::placeholders("A bowlful.", &subjects[..1], &names),
        Err("bowl")
    );
}

#[test]
fn paper_scene_and_level_must_match_the_numbering() {
    let body = GOOD_BODY.replace("#02", "#06").replace("#03", "#16");
    let dir = fixture("prompts.txt", &paper(&body));
    check(
        dir.path(),
        "prompts.txt",
        expect![[r#"
        <dir>/prompts.txt:20: #06 is under the `No interaction` heading but its number puts it under `Occlusion`
        <dir>/prompts.txt:23: #16 is under the 2-SUBJECT banner but its number puts it at level 4
        <dir>/prompts.txt:23: prompt `16_no_interaction` lists 2 subjects but its text or header says 4"#]],
    );
}

/// The example in `prompts/README.md` is a valid benchmark.
#[test]
fn readme_example_loads() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts/README.md"),
    )
    .unwrap();
    let yaml = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    for image in ["black_women.jpg", "Siamese cat.jpg", "bowl.png"] {
        std::fs::copy(
            common::val_dataset().join(image),
            dir.path().join("images").join(image),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("example.yaml"), yaml).unwrap();
    let bench = Benchmark::load(&dir.path().join("example.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((bench.subjects.len(), bench.prompts.len()), (3, 1));
    let m = expand(
        &bench,
        &bench.prompts[0],
        PromptFormat::Placeholders {
            idip: IdipPolicy::PeopleOnly,
        },
    )
    .unwrap();
    assert_eq!(m.text, "A ENT1 stroking a ENT2.");
}
