//! The paper's benchmark (the shared, never committed copy) loads, validates, expands in every
//! format and survives a round trip through the YAML format.

mod common;

use std::fmt::Write as _;

use benchmark::expand::{IdipPolicy, ModelPrompt, PromptFormat, expand};
use benchmark::{Benchmark, Scene, SubjectKind};
use expect_test::expect;

const FORMATS: [PromptFormat; 4] = [
    PromptFormat::Plain,
    PromptFormat::Placeholders {
        idip: IdipPolicy::PeopleOnly,
    },
    PromptFormat::Placeholders {
        idip: IdipPolicy::PaperAll,
    },
    PromptFormat::TextOnly,
];

fn paper() -> Benchmark {
    Benchmark::load(&common::dataset()).expect("the paper's benchmark loads")
}

#[test]
fn summary() {
    let bench = paper();
    let mut out = format!(
        "{}: {} subjects, {} prompts\n",
        bench.name,
        bench.subjects.len(),
        bench.prompts.len()
    );
    for kind in [
        SubjectKind::Person,
        SubjectKind::Animal,
        SubjectKind::Object,
    ] {
        let names: Vec<String> = bench
            .subjects
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| {
                format!(
                    "{} ({})",
                    s.name,
                    s.image.file_name().unwrap().to_string_lossy()
                )
            })
            .collect();
        writeln!(out, "{kind:?} ({}): {}", names.len(), names.join(", ")).unwrap();
    }
    out.push_str("N   neutral occlusion interaction  ids\n");
    for n in [2, 4, 6, 8, 10] {
        let counts = Scene::ALL.map(|scene| {
            bench
                .prompts
                .iter()
                .filter(|p| p.subject_count() == n && p.scene == scene)
                .count()
        });
        let ids: Vec<&str> = bench
            .prompts
            .iter()
            .filter(|p| p.subject_count() == n)
            .map(|p| p.id.as_str())
            .collect();
        writeln!(
            out,
            "{n:<3} {:>7} {:>9} {:>11}  {} .. {}",
            counts[0],
            counts[1],
            counts[2],
            ids[0],
            ids[ids.len() - 1]
        )
        .unwrap();
    }
    let at = &bench.prompt("75_interaction").unwrap().location;
    writeln!(
        out,
        "75_interaction at line {} of {}",
        at.line,
        at.file.file_name().unwrap().to_string_lossy()
    )
    .unwrap();
    expect![[r#"
        p13n-workshop: 30 subjects, 75 prompts
        Person (7): black woman (black_women.jpg), middle eastern man (middle_eastern_man.jpg), black man (blackman.jpg), western woman (western_woman.jpg), asian woman (asian_woman.jpg), old man (old_man.jpg), girl (girl.jpg)
        Animal (5): dog (dog.jpg), panda (panda.jpg), woodpecker (woodpecker.jpg), Siamese cat (Siamese cat.jpg), hamster (hamster.jpg)
        Object (18): cup (cup.jpg), t-shirt (tshirt.jpg), puzzle cube (puzzle_cube.jpg), stuffed bear (stuff_bear.jpg), painting (painting.jpg), cactus (cactus.jpg), motorcycle (motor.jpg), can (can.jpg), vase (vase.jpg), bowl (bowl.png), berry bowl (berry_bowl.jpg), leather handbag (leather handbag.jpg), clock (clock.jpg), guitar (guitar.jpg), backpack (backpack.jpg), vintage camera (vintage camera.jpg), armchair (armchair.jpg), hat (hat.jpg)
        N   neutral occlusion interaction  ids
        2         5         5           5  01_no_interaction .. 15_interaction
        4         5         5           5  16_no_interaction .. 30_interaction
        6         5         5           5  31_no_interaction .. 45_interaction
        8         5         5           5  46_no_interaction .. 60_interaction
        10        5         5           5  61_no_interaction .. 75_interaction
        75_interaction at line 286 of prompts_50.txt
    "#]].assert_eq(&out);
}

fn render(m: &ModelPrompt) -> String {
    let mut out = format!("{:?}\n  {}\n", m.format, m.text);
    for r in &m.references {
        let file = r.image.file_name().unwrap().to_string_lossy();
        writeln!(
            out,
            "  - {} <{file}> caption={:?} idip={}",
            r.name, r.caption, r.idip
        )
        .unwrap();
    }
    out
}

#[test]
fn expansions() {
    let bench = paper();
    let mut out = String::new();
    // 2 subjects (neutral), 6 (occlusion, listed out of text order, repeated mentions), 10
    // (interaction, out of order).
    for id in ["01_no_interaction", "40_occlusion", "74_interaction"] {
        let prompt = bench.prompt(id).unwrap();
        writeln!(out, "## {id}").unwrap();
        for format in FORMATS {
            out.push_str(&render(&expand(&bench, prompt, format).unwrap()));
        }
    }
    expect![[r###"
        ## 01_no_interaction
        Plain
          An open plaza at noon: a black woman standing near a fountain, and a western woman reading a phone beside her.
          - black woman <black_women.jpg> caption="black woman" idip=false
          - western woman <western_woman.jpg> caption="western woman" idip=false
        Placeholders { idip: PeopleOnly }
          An open plaza at noon: a ENT1 standing near a fountain, and a ENT2 reading a phone beside her.
          - black woman <black_women.jpg> caption="black woman" idip=true
          - western woman <western_woman.jpg> caption="western woman" idip=true
        Placeholders { idip: PaperAll }
          An open plaza at noon: a ENT1 standing near a fountain, and a ENT2 reading a phone beside her.
          - black woman <black_women.jpg> caption="black woman" idip=true
          - western woman <western_woman.jpg> caption="western woman" idip=true
        TextOnly
          An open plaza at noon: a black woman standing near a fountain, and a western woman reading a phone beside her.
        ## 40_occlusion
        Plain
          A dim studio: a western woman seated in an armchair, a leather handbag on the armchair arm partly covering a vintage camera, a clock partly hidden behind the guitar, and a guitar leaning against the armchair.
          - leather handbag <leather handbag.jpg> caption="leather handbag" idip=false
          - vintage camera <vintage camera.jpg> caption="vintage camera" idip=false
          - clock <clock.jpg> caption="clock" idip=false
          - guitar <guitar.jpg> caption="guitar" idip=false
          - armchair <armchair.jpg> caption="armchair" idip=false
          - western woman <western_woman.jpg> caption="western woman" idip=false
        Placeholders { idip: PeopleOnly }
          A dim studio: a ENT6 seated in an ENT5, a ENT1 on the armchair arm partly covering a ENT2, a ENT3 partly hidden behind the ENT4, and a guitar leaning against the armchair.
          - leather handbag <leather handbag.jpg> caption="leather handbag" idip=false
          - vintage camera <vintage camera.jpg> caption="vintage camera" idip=false
          - clock <clock.jpg> caption="clock" idip=false
          - guitar <guitar.jpg> caption="guitar" idip=false
          - armchair <armchair.jpg> caption="armchair" idip=false
          - western woman <western_woman.jpg> caption="western woman" idip=true
        Placeholders { idip: PaperAll }
          A dim studio: a ENT6 seated in an ENT5, a ENT1 on the armchair arm partly covering a ENT2, a ENT3 partly hidden behind the ENT4, and a guitar leaning against the armchair.
          - leather handbag <leather handbag.jpg> caption="leather handbag" idip=true
          - vintage camera <vintage camera.jpg> caption="vintage camera" idip=true
          - clock <clock.jpg> caption="clock" idip=true
          - guitar <guitar.jpg> caption="guitar" idip=true
          - armchair <armchair.jpg> caption="armchair" idip=true
          - western woman <western_woman.jpg> caption="western woman" idip=true
        TextOnly
          A dim studio: a western woman seated in an armchair, a leather handbag on the armchair arm partly covering a vintage camera, a clock partly hidden behind the guitar, and a guitar leaning against the armchair.
        ## 74_interaction
        Plain
          A craft table: a stuffed bear holding a t-shirt, a cup resting inside the bowl, a can leaning against the cup, a puzzle cube stacked against the can, a vase touching the bowl, a cactus placed next to the vase, a clock propped against the painting, and a painting leaning against the table edge.
          - cactus <cactus.jpg> caption="cactus" idip=false
          - vase <vase.jpg> caption="vase" idip=false
          - bowl <bowl.png> caption="bowl" idip=false
          - cup <cup.jpg> caption="cup" idip=false
          - can <can.jpg> caption="can" idip=false
          - clock <clock.jpg> caption="clock" idip=false
          - puzzle cube <puzzle_cube.jpg> caption="puzzle cube" idip=false
          - painting <painting.jpg> caption="painting" idip=false
          - stuffed bear <stuff_bear.jpg> caption="stuffed bear" idip=false
          - t-shirt <tshirt.jpg> caption="t-shirt" idip=false
        Placeholders { idip: PeopleOnly }
          A craft table: a ENT9 holding a ENT10, a ENT4 resting inside the ENT3, a ENT5 leaning against the cup, a ENT7 stacked against the can, a ENT2 touching the bowl, a ENT1 placed next to the vase, a ENT6 propped against the ENT8, and a painting leaning against the table edge.
          - cactus <cactus.jpg> caption="cactus" idip=false
          - vase <vase.jpg> caption="vase" idip=false
          - bowl <bowl.png> caption="bowl" idip=false
          - cup <cup.jpg> caption="cup" idip=false
          - can <can.jpg> caption="can" idip=false
          - clock <clock.jpg> caption="clock" idip=false
          - puzzle cube <puzzle_cube.jpg> caption="puzzle cube" idip=false
          - painting <painting.jpg> caption="painting" idip=false
          - stuffed bear <stuff_bear.jpg> caption="stuffed bear" idip=false
          - t-shirt <tshirt.jpg> caption="t-shirt" idip=false
        Placeholders { idip: PaperAll }
          A craft table: a ENT9 holding a ENT10, a ENT4 resting inside the ENT3, a ENT5 leaning against the cup, a ENT7 stacked against the can, a ENT2 touching the bowl, a ENT1 placed next to the vase, a ENT6 propped against the ENT8, and a painting leaning against the table edge.
          - cactus <cactus.jpg> caption="cactus" idip=true
          - vase <vase.jpg> caption="vase" idip=true
          - bowl <bowl.png> caption="bowl" idip=true
          - cup <cup.jpg> caption="cup" idip=true
          - can <can.jpg> caption="can" idip=true
          - clock <clock.jpg> caption="clock" idip=true
          - puzzle cube <puzzle_cube.jpg> caption="puzzle cube" idip=true
          - painting <painting.jpg> caption="painting" idip=true
          - stuffed bear <stuff_bear.jpg> caption="stuffed bear" idip=true
          - t-shirt <tshirt.jpg> caption="t-shirt" idip=true
        TextOnly
          A craft table: a stuffed bear holding a t-shirt, a cup resting inside the bowl, a can leaning against the cup, a puzzle cube stacked against the can, a vase touching the bowl, a cactus placed next to the vase, a clock propped against the painting, and a painting leaning against the table edge.
    "###]].assert_eq(&out);
}

/// Every prompt expands in every format; XVerse's own `ENTi → caption` substitution gives back the
/// paper's text exactly (which is what the paper, passing the plain text, effectively ran).
#[test]
fn every_prompt_expands_and_round_trips_through_placeholders() {
    let bench = paper();
    for prompt in &bench.prompts {
        for format in FORMATS {
            let m = expand(&bench, prompt, format).unwrap_or_else(|e| panic!("{e}"));
            let refs = if format == PromptFormat::TextOnly {
                0
            } else {
                prompt.subject_count()
            };
            assert_eq!(m.references.len(), refs, "{}", prompt.id);
            if let PromptFormat::Placeholders { .. } = format {
                let mut text = m.text.clone();
                for (i, r) in m.references.iter().enumerate().rev() {
                    assert!(
                        text.contains(&format!("ENT{}", i + 1)),
                        "{}: {}",
                        prompt.id,
                        m.text
                    );
                    text = text.replace(&format!("ENT{}", i + 1), &r.caption);
                }
                assert_eq!(text, prompt.text, "{}", prompt.id);
            }
        }
    }
}

#[test]
fn idip_policies() {
    let bench = paper();
    let prompt = bench.prompt("75_interaction").unwrap();
    let flags = |idip| {
        let m = expand(&bench, prompt, PromptFormat::Placeholders { idip }).unwrap();
        m.references.iter().map(|r| r.idip).collect::<Vec<_>>()
    };
    let people = prompt
        .subjects
        .iter()
        .map(|s| bench.subject(s).unwrap().kind == SubjectKind::Person)
        .collect::<Vec<_>>();
    assert_eq!(flags(IdipPolicy::PeopleOnly), people);
    assert_eq!(flags(IdipPolicy::PaperAll), vec![true; 10]);
}

#[test]
fn yaml_round_trip() {
    let bench = paper();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("p13n.yaml");
    let images = bench.image_root().unwrap();
    assert_eq!(
        images,
        std::fs::canonicalize(common::val_dataset()).unwrap()
    );
    let text = benchmark::to_yaml(&bench, &images);
    std::fs::write(&yaml, &text).unwrap();
    let back = Benchmark::load(&yaml).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.name, bench.name);
    assert_eq!(back.subjects, bench.subjects);
    assert_eq!(back.prompts.len(), bench.prompts.len());
    for (a, b) in back.prompts.iter().zip(&bench.prompts) {
        assert_eq!(
            (&a.id, a.scene, &a.text, &a.subjects),
            (&b.id, b.scene, &b.text, &b.subjects)
        );
        assert_eq!(a.location.file, yaml);
    }
    let head: String = text
        .replace(&images.display().to_string(), "<val_dataset>")
        .lines()
        .take(8)
        .collect::<Vec<_>>()
        .join("\n");
    let prompt: String = text
        .lines()
        .skip_while(|l| !l.contains("40_occlusion"))
        .take(4)
        .collect::<Vec<_>>()
        .join("\n");
    expect![[r##"
        # scrbench benchmark; format: prompts/README.md
        name: p13n-workshop
        images: <val_dataset>
        subjects:
          - {name: black woman, kind: person, image: black_women.jpg}
          - {name: middle eastern man, kind: person, image: middle_eastern_man.jpg}
          - {name: black man, kind: person, image: blackman.jpg}
          - {name: western woman, kind: person, image: western_woman.jpg}
        ...
          - id: 40_occlusion
            scene: occlusion
            subjects: [leather handbag, vintage camera, clock, guitar, armchair, western woman]
            text: "A dim studio: a western woman seated in an armchair, a leather handbag on the armchair arm partly covering a vintage camera, a clock partly hidden behind the guitar, and a guitar leaning against the armchair."
    "##]].assert_eq(&format!("{head}\n...\n{prompt}\n"));
}

#[test]
fn load_accepts_the_txt_file_and_its_folder() {
    let bench = paper();
    assert_eq!(
        Benchmark::load(&common::val_dataset()).unwrap().prompts,
        bench.prompts
    );
    let file = Benchmark::load(&common::val_dataset().join("prompts_50.txt")).unwrap();
    assert_eq!(file.subjects, bench.subjects);
}
