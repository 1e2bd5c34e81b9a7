//! The paper's published per-image scores, aggregated by this crate: Table 1 to the printed
//! digits, the per-N rows of `<model>_summary.csv` to 6 decimals, the corrected scene split, the
//! bootstrap's determinism and the report written from them.

use std::path::PathBuf;

use benchmark::Scene;
use expect_test::{expect, expect_file};
use scores::{Bootstrap, ImageScores, Metric, Summary, aggregate, import_paper_results};

const DATASET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/datasets/p13n-workshop"
);
const MODELS: [&str; 3] = ["mosaic", "xverse", "psr"];

fn results_file(model: &str) -> PathBuf {
    PathBuf::from(DATASET).join(format!("eval_outputs/{model}_results.json"))
}

fn paper_scores() -> Vec<ImageScores> {
    MODELS
        .iter()
        .flat_map(|m| import_paper_results(&results_file(m)).expect("published results import"))
        .collect()
}

fn paper_summary() -> Summary {
    aggregate(&paper_scores(), &Bootstrap::default()).unwrap()
}

/// Table 1 of the paper (DESIGN §1): CLIP-T / CLIP-I / DINOv2 / SCR@0.4 per N, in model order.
const TABLE_1: [(usize, [&str; 3]); 5] = [
    (
        2,
        [
            "0.261 / 0.695 / 0.425 / 48.9%",
            "0.268 / 0.646 / 0.355 / 58.9%",
            "0.274 / 0.647 / 0.325 / 63.3%",
        ],
    ),
    (
        4,
        [
            "0.289 / 0.586 / 0.235 / 81.7%",
            "0.279 / 0.593 / 0.211 / 80.0%",
            "0.292 / 0.568 / 0.189 / 85.6%",
        ],
    ),
    (
        6,
        [
            "0.297 / 0.535 / 0.164 / 90.7%",
            "0.275 / 0.550 / 0.142 / 93.0%",
            "0.302 / 0.537 / 0.136 / 94.1%",
        ],
    ),
    (
        8,
        [
            "0.302 / 0.517 / 0.126 / 94.7%",
            "0.276 / 0.532 / 0.123 / 94.4%",
            "0.304 / 0.517 / 0.117 / 95.0%",
        ],
    ),
    (
        10,
        [
            "0.300 / 0.504 / 0.110 / 96.0%",
            "0.283 / 0.524 / 0.104 / 96.4%",
            "0.309 / 0.500 / 0.101 / 97.8%",
        ],
    ),
];

#[test]
fn table_1_is_reproduced_to_the_printed_digits() {
    let summary = paper_summary();
    let mean = |model: &str, n: usize, metric: Metric| {
        summary
            .cell(model, Some(n), None)
            .and_then(|c| c.stat(&metric))
            .map(|s| s.mean)
            .unwrap_or_else(|| panic!("{model} N={n} has no {metric}"))
    };
    let mut checked = 0;
    for (n, row) in TABLE_1 {
        for (model, expected) in MODELS.iter().zip(row) {
            let cell = format!(
                "{:.3} / {:.3} / {:.3} / {:.1}%",
                mean(model, n, Metric::ClipT),
                mean(model, n, Metric::ClipI),
                mean(model, n, Metric::Dinov2),
                100.0 * mean(model, n, Metric::scr("0.4")),
            );
            assert_eq!(cell, expected, "{model}, N = {n}");
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
    // The report prints Table 1 with the same digits.
    let report = scores::report::report_md("paper", &summary);
    for (n, row) in TABLE_1 {
        let line = format!("| {n} | {} |", row.join(" | "));
        assert!(report.contains(&line), "report.md lacks {line}");
    }
}

#[test]
fn per_n_rows_match_the_published_summary_csv() {
    let summary = paper_summary();
    for model in MODELS {
        let path = PathBuf::from(DATASET).join(format!("eval_outputs/{model}_summary.csv"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let mut rows = 0;
        for line in lines.filter(|l| l.split(',').nth(1) == Some("all")) {
            let fields: Vec<&str> = line.split(',').collect();
            let n: usize = fields[0].parse().unwrap();
            let cell = summary.cell(model, Some(n), None).unwrap();
            for (name, field) in header.iter().zip(&fields).skip(2) {
                if *name == "count" {
                    assert_eq!(cell.images.to_string(), *field, "{model} N={n} count");
                    continue;
                }
                let metric = Metric::try_from(name.to_string()).unwrap();
                let mean = cell.stat(&metric).unwrap().mean;
                assert_eq!(format!("{mean:.6}"), *field, "{model} N={n} {name}");
            }
            rows += 1;
        }
        assert_eq!(rows, 5, "{model}: per-N rows");
    }
}

#[test]
fn scenes_come_from_prompt_ids_3_scenes_by_5_counts_by_15_images() {
    let scores = paper_scores();
    assert_eq!(scores.len(), 3 * 225);
    let summary = aggregate(&scores, &Bootstrap::default()).unwrap();
    assert_eq!(summary.subject_counts, [2, 4, 6, 8, 10]);
    for model in MODELS {
        for scene in Scene::ALL {
            let cell = summary.cell(model, None, Some(scene)).unwrap();
            assert_eq!((cell.images, cell.prompts), (75, 25), "{model} {scene}");
            for n in [2, 4, 6, 8, 10] {
                let cell = summary.cell(model, Some(n), Some(scene)).unwrap();
                assert_eq!(
                    (cell.images, cell.prompts, cell.failed),
                    (15, 5, 0),
                    "{model} N={n} {scene}"
                );
            }
        }
        // 1 all + 5 counts + 3 scenes + 15 count × scene cells.
        assert_eq!(
            summary.cells.iter().filter(|c| c.model == model).count(),
            24
        );
    }
}

#[test]
fn bootstrap_bounds_are_reproducible_bit_for_bit() {
    let scores = paper_scores();
    let a = aggregate(&scores, &Bootstrap::default()).unwrap();
    let b = aggregate(&scores, &Bootstrap::default()).unwrap();
    let bits = |s: &Summary| -> Vec<(u64, u64, u64)> {
        s.cells
            .iter()
            .flat_map(|c| c.stats.values())
            .map(|s| (s.mean.to_bits(), s.lo.to_bits(), s.hi.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    // A cell's interval does not depend on the other cells: aggregating one model alone gives
    // the same bounds for it.
    let mosaic: Vec<ImageScores> = scores.into_iter().filter(|s| s.model == "mosaic").collect();
    let alone = aggregate(&mosaic, &Bootstrap::default()).unwrap();
    assert_eq!(alone.cells, a.cells[..alone.cells.len()]);

    let snapshot: String = ["mosaic", "psr"]
        .iter()
        .flat_map(|model| {
            [
                (Some(2), None),
                (Some(10), None),
                (None, Some(Scene::Occlusion)),
            ]
            .map(|(n, scene)| {
                let cell = a.cell(model, n, scene).unwrap();
                let s = cell.stat(&Metric::scr("0.4")).unwrap();
                let d = cell.stat(&Metric::Dinov2).unwrap();
                format!(
                    "{}: scr@0.4 {} [{}, {}]  dinov2 {} [{}, {}]\n",
                    cell.label(),
                    s.mean,
                    s.lo,
                    s.hi,
                    d.mean,
                    d.lo,
                    d.hi
                )
            })
        })
        .collect();
    expect![[r#"
        mosaic|2|all: scr@0.4 0.4888888888888889 [0.34444444444444444, 0.6333333333333333]  dinov2 0.42455527863154807 [0.3295954511769944, 0.5211511953966692]
        mosaic|10|all: scr@0.4 0.9599999999999999 [0.9244444444444445, 0.9866666666666666]  dinov2 0.11014267118130293 [0.09176772679880055, 0.12807378342318249]
        mosaic|all|occlusion: scr@0.4 0.8298888888888889 [0.7295555555555556, 0.9172222222222223]  dinov2 0.21743046923985498 [0.1667239602636313, 0.2729389437905694]
        psr|2|all: scr@0.4 0.6333333333333333 [0.4666666666666667, 0.7888888888888889]  dinov2 0.3245095676018132 [0.23073902542185454, 0.42137461878514537]
        psr|10|all: scr@0.4 0.9777777777777777 [0.9577777777777778, 0.9955555555555555]  dinov2 0.10054104625764819 [0.08220608060990667, 0.11892279535451801]
        psr|all|occlusion: scr@0.4 0.8726666666666667 [0.7929944444444446, 0.9416666666666667]  dinov2 0.17071669068601392 [0.1321801451744046, 0.2123280792587178]
    "#]].assert_eq(&snapshot);
}

#[test]
fn report_md_snapshot() {
    let report = scores::report::report_md("paper", &paper_summary());
    expect_file!["snapshots/paper_report.md"].assert_eq(&report);
}

#[test]
fn import_and_report_writes_every_file_and_figures_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paper");
    let files: Vec<PathBuf> = MODELS.iter().map(|m| results_file(m)).collect();
    let written = scores::import_and_report(&files, &out).unwrap();

    let jsonl = std::fs::read_to_string(&written.results).unwrap();
    assert_eq!(jsonl.lines().count(), 675);
    let first: ImageScores = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            first.model.as_str(),
            first.prompt_id.as_str(),
            first.seed,
            first.scene
        ),
        ("mosaic", "01_no_interaction", 42, Scene::Neutral)
    );
    let csv = std::fs::read_to_string(&written.summary_csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 24);
    assert!(csv.starts_with("model,subject_count,scene,images,prompts,failed,clip_t,clip_t_lo,"));
    let md = std::fs::read_to_string(&written.report_md).unwrap();
    assert_eq!(md, scores::report::report_md("paper", &written.summary));

    let names: Vec<String> = written
        .figures
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "scr_vs_n.svg",
            "scr_vs_n.png",
            "scr_by_scene.svg",
            "scr_by_scene.png",
            "clip_vs_scr.svg",
            "clip_vs_scr.png"
        ]
    );
    for path in &written.figures {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() > 1000, "{} is nearly empty", path.display());
        if path.extension().unwrap() == "svg" {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
            for text in ["<text", "mosaic", "xverse", "psr"] {
                assert!(svg.contains(text), "{} lacks {text}", path.display());
            }
        } else {
            let image = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(image.dimensions(), (900, 520));
            let colours: std::collections::BTreeSet<[u8; 3]> =
                image.pixels().map(|p| p.0).collect();
            assert!(colours.len() > 20, "{} looks blank", path.display());
        }
    }
    // Figures are pure functions of the summary.
    let again = scores::figures::Figure::ScrVsN
        .svg(&written.summary)
        .unwrap();
    assert_eq!(again, std::fs::read_to_string(&written.figures[0]).unwrap());
}
