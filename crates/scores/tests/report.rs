//! Reports from hand-made scores: failed images stay visible, absent metrics stay absent, and
//! import errors name the file and the record.

use std::collections::BTreeMap;

use benchmark::Scene;
use expect_test::expect;
use scores::{
    Bootstrap, Embeddings, ImageScores, Metric, Metrics, Reference, ReportOptions, aggregate,
    import_paper_results, score_image, write_report,
};

fn image(prompt_id: &str, seed: u64, metrics: Result<Metrics, String>) -> ImageScores {
    let (metrics, error) = match metrics {
        Ok(m) => (m, None),
        Err(e) => (Metrics::default(), Some(e)),
    };
    ImageScores {
        model: "toy".into(),
        prompt_id: prompt_id.into(),
        seed,
        subject_count: 2,
        scene: Scene::Neutral,
        image_digest: Some(format!("sha256:{seed}")),
        metrics,
        provenance: serde_json::json!({"encoders": {"dinov2": "facebook/dinov2-small"}}),
        error,
    }
}

/// Scores with DINOv2 only (no CLIP, no DINO configured) and one failed image.
fn toy_scores() -> Vec<ImageScores> {
    let dinov2 = |v: &[f32]| Embeddings {
        dinov2: Some(v.to_vec()),
        ..Embeddings::default()
    };
    let (a, b) = (dinov2(&[1.0, 0.0]), dinov2(&[0.0, 1.0]));
    let refs = [
        Reference {
            name: "dog",
            embeddings: &a,
        },
        Reference {
            name: "cup",
            embeddings: &b,
        },
    ];
    let score =
        |g: &[f32]| score_image(&dinov2(g), &refs, None, &[0.4, 0.5]).map_err(|e| e.to_string());
    vec![
        image("01_no_interaction", 43, score(&[1.0, 0.0])),
        image("01_no_interaction", 42, score(&[1.0, 1.0])),
        image("02_no_interaction", 42, score(&[0.0, 0.0])),
        image("02_no_interaction", 43, score(&[3.0, 1.0])),
    ]
}

#[test]
fn failed_items_and_absent_metrics_are_reported() {
    let scores = toy_scores();
    assert!(scores[2].is_failed());
    let dir = tempfile::tempdir().unwrap();
    let options = ReportOptions {
        bootstrap: Bootstrap {
            resamples: 200,
            ..Bootstrap::default()
        },
        figures: true,
    };
    let files = write_report(dir.path(), "toy", &scores, &options).unwrap();

    let jsonl = std::fs::read_to_string(&files.results).unwrap();
    expect![[r#"
        {"model":"toy","prompt_id":"01_no_interaction","seed":42,"subject_count":2,"scene":"neutral","image_digest":"sha256:42","clip_t":null,"clip_i":null,"dino":null,"dinov2":0.7071067811865475,"scr":{"0.4":0.0,"0.5":0.0},"subjects":[{"name":"dog","clip_i":null,"dino":null,"dinov2":0.7071067811865475},{"name":"cup","clip_i":null,"dino":null,"dinov2":0.7071067811865475}],"provenance":{"encoders":{"dinov2":"facebook/dinov2-small"}}}
        {"model":"toy","prompt_id":"01_no_interaction","seed":43,"subject_count":2,"scene":"neutral","image_digest":"sha256:43","clip_t":null,"clip_i":null,"dino":null,"dinov2":0.5,"scr":{"0.4":0.5,"0.5":0.5},"subjects":[{"name":"dog","clip_i":null,"dino":null,"dinov2":1.0},{"name":"cup","clip_i":null,"dino":null,"dinov2":0.0}],"provenance":{"encoders":{"dinov2":"facebook/dinov2-small"}}}
        {"model":"toy","prompt_id":"02_no_interaction","seed":42,"subject_count":2,"scene":"neutral","image_digest":"sha256:42","clip_t":null,"clip_i":null,"dino":null,"dinov2":null,"scr":{},"subjects":[],"provenance":{"encoders":{"dinov2":"facebook/dinov2-small"}},"error":"DINOv2: the generated image's embedding is zero or not finite"}
        {"model":"toy","prompt_id":"02_no_interaction","seed":43,"subject_count":2,"scene":"neutral","image_digest":"sha256:43","clip_t":null,"clip_i":null,"dino":null,"dinov2":0.6324555320336759,"scr":{"0.4":0.5,"0.5":0.5},"subjects":[{"name":"dog","clip_i":null,"dino":null,"dinov2":0.9486832980505138},{"name":"cup","clip_i":null,"dino":null,"dinov2":0.31622776601683794}],"provenance":{"encoders":{"dinov2":"facebook/dinov2-small"}}}
    "#]].assert_eq(&jsonl);
    let back: Vec<ImageScores> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back.len(), 4);
    assert!(back.iter().all(|b| scores.contains(b)));

    let cell = files.summary.cell("toy", None, None).unwrap();
    assert_eq!((cell.images, cell.prompts, cell.failed), (3, 2, 1));
    assert!(
        cell.stat(&Metric::ClipT).is_none(),
        "no CLIP encoder: no CLIP-T"
    );

    let md = std::fs::read_to_string(&files.report_md).unwrap();
    expect![[r#"
        # toy: identity collapse

        3 scored images and 1 failed, from 1 model(s). Values are plain means over images (the paper's convention); intervals are 95% percentile-bootstrap intervals resampling prompts (the seeds of a prompt stay together), 200 resamples, seed 0x5c2be4c420260013. SCR@τ is the share of reference subjects whose DINOv2 cosine with the generated image is below τ, shown as a percentage.

        | Model | images | prompts | failed |
        |---|---|---|---|
        | toy | 3 | 2 | 1 |

        ## Table 1: CLIP-T / CLIP-I / DINOv2 / SCR@0.4 by number of subjects N

        | N | toy |
        |---|---|
        | 2 | – / – / 0.613 / 33.3% |

        ## SCR@0.4 by number of subjects N, with 95% CI

        | N | toy |
        |---|---|
        | 2 | 33.3% [25.0, 50.0] |
        | all | 33.3% [25.0, 50.0] |

        ## By scene type: CLIP-T / CLIP-I / DINOv2 / SCR@0.4

        | Scene | toy |
        |---|---|
        | neutral | – / – / 0.613 / 33.3% [25.0, 50.0] |
        | occlusion | – |
        | interaction | – |

        ## SCR@0.4 by N and scene type, with 95% CI

        | N | Scene | toy |
        |---|---|---|
        | 2 | neutral | 33.3% [25.0, 50.0] |
        | 2 | occlusion | – |
        | 2 | interaction | – |

        ## SCR at every threshold, with 95% CI

        | Model | N | SCR@0.4 | SCR@0.5 |
        |---|---|---|---|
        | toy | 2 | 33.3% [25.0, 50.0] | 33.3% [25.0, 50.0] |
        | toy | all | 33.3% [25.0, 50.0] | 33.3% [25.0, 50.0] |

        ## Failed images

        - toy / 02_no_interaction / seed 42: DINOv2: the generated image's embedding is zero or not finite
    "#]].assert_eq(&md);
    let csv = std::fs::read_to_string(&files.summary_csv).unwrap();
    expect![[r#"
        model,subject_count,scene,images,prompts,failed,clip_t,clip_t_lo,clip_t_hi,clip_i,clip_i_lo,clip_i_hi,dino,dino_lo,dino_hi,dinov2,dinov2_lo,dinov2_hi,scr@0.4,scr@0.4_lo,scr@0.4_hi,scr@0.5,scr@0.5_lo,scr@0.5_hi
        toy,all,all,3,2,1,,,,,,,,,,0.6131874377400744,0.6035533905932737,0.6324555320336759,0.3333333333333333,0.25,0.5,0.3333333333333333,0.25,0.5
        toy,2,all,3,2,1,,,,,,,,,,0.6131874377400744,0.6035533905932737,0.6324555320336759,0.3333333333333333,0.25,0.5,0.3333333333333333,0.25,0.5
        toy,all,neutral,3,2,1,,,,,,,,,,0.6131874377400744,0.6035533905932737,0.6324555320336759,0.3333333333333333,0.25,0.5,0.3333333333333333,0.25,0.5
        toy,2,neutral,3,2,1,,,,,,,,,,0.6131874377400744,0.6035533905932737,0.6324555320336759,0.3333333333333333,0.25,0.5,0.3333333333333333,0.25,0.5
    "#]].assert_eq(&csv);
    assert_eq!(files.figures.len(), 6);
}

#[test]
fn duplicates_are_refused() {
    let mut scores = toy_scores();
    scores.push(scores[0].clone());
    let err = aggregate(&scores, &Bootstrap::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model toy, prompt 01_no_interaction, seed 43: listed twice"
    );
}

#[test]
fn empty_scores_still_give_a_report() {
    let summary = aggregate(&[], &Bootstrap::default()).unwrap();
    let md = scores::report::report_md("empty", &summary);
    assert!(md.contains("## Failed images\n\nNone.\n"));
    for figure in scores::figures::Figure::ALL {
        assert!(figure.svg(&summary).unwrap().contains("<svg"));
        assert!(!figure.png(&summary).unwrap().is_empty());
    }
}

#[test]
fn import_errors_name_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy_results.json");
    let record = |id: &str, count: usize| {
        serde_json::json!({
            "prompt_id": id, "seed": 42, "subject_count": count, "scene_type": "unknown",
            "clip_t": 0.3, "clip_i": 0.6, "dino": 0.4, "dinov2": 0.3,
            "scr": {"0.4": 1.0}, "prompt": "p", "output_path": "x.png"
        })
    };
    let write = |results: Vec<serde_json::Value>| {
        let file = serde_json::json!({"model": "toy", "time": 0, "results": results});
        std::fs::write(&path, file.to_string()).unwrap();
    };
    let message = || {
        import_paper_results(&path)
            .unwrap_err()
            .to_string()
            .replace(&dir.path().display().to_string(), "DIR")
    };

    write(vec![
        record("16_no_interaction", 4),
        record("17_occlusion", 4),
    ]);
    expect![[r#"DIR/toy_results.json: record 1 (17_occlusion): prompt id "17_occlusion": entry 17 is a neutral prompt in the paper's layout"#]].assert_eq(&message());
    write(vec![record("16_no_interaction", 2)]);
    expect!["DIR/toy_results.json: record 0 (16_no_interaction): subject_count is 2 but prompt 16_no_interaction has 4 subjects"].assert_eq(&message());
    let mut broken = record("16_no_interaction", 4);
    broken["clip_t"] = serde_json::Value::Null;
    write(vec![broken]);
    expect!["DIR/toy_results.json: record 0 (16_no_interaction): invalid type: null, expected f64"]
        .assert_eq(&message());

    write(vec![record("16_no_interaction", 4)]);
    let imported = import_paper_results(&path).unwrap();
    assert_eq!(imported[0].scene, Scene::Neutral);
    assert_eq!(
        imported[0].metrics.scr,
        BTreeMap::from([("0.4".into(), 1.0)])
    );
    assert!(imported[0].metrics.subjects.is_empty());
}

/// With detection, local SCR, homogenisation and same-instance are aggregated like the paper's
/// metrics (means with prompt-bootstrap intervals by N and scene) and shown beside the global SCR.
#[test]
fn local_metrics_are_aggregated_and_reported_beside_global_scr() {
    let mut scores = toy_scores();
    scores.remove(2); // the failed one
    for (i, s) in scores.iter_mut().enumerate() {
        s.metrics.local_scr = BTreeMap::from([("0.4".to_owned(), [0.0, 0.5, 1.0][i])]);
        s.metrics.homogenisation = Some([0.2, 0.4, 0.9][i]);
        s.metrics.same_instance = Some([0.0, 0.0, 2.0][i]);
    }
    let bootstrap = Bootstrap {
        resamples: 200,
        ..Bootstrap::default()
    };
    let summary = aggregate(&scores, &bootstrap).unwrap();
    assert_eq!(summary.local_thresholds, ["0.4"]);
    let all = summary.cell("toy", None, None).unwrap();
    let local = all.stat(&Metric::LocalScr("0.4".into())).unwrap();
    assert_eq!((local.n, local.mean), (3, 0.5));
    assert!(local.lo <= local.mean && local.mean <= local.hi);
    let homogenisation = all.stat(&Metric::Homogenisation).unwrap();
    assert!((homogenisation.mean - 0.5).abs() < 1e-12);
    assert_eq!(all.stat(&Metric::SameInstance).unwrap().mean, 2.0 / 3.0);
    let by_scene = summary.cell("toy", None, Some(Scene::Neutral)).unwrap();
    assert_eq!(by_scene.stat(&Metric::LocalScr("0.4".into())).unwrap().n, 3);

    let dir = tempfile::tempdir().unwrap();
    let options = ReportOptions {
        bootstrap,
        figures: true,
    };
    let files = write_report(dir.path(), "toy", &scores, &options).unwrap();
    let scr_vs_n = std::fs::read_to_string(&files.figures[0]).unwrap();
    assert!(
        scr_vs_n.contains("dashed: local"),
        "the figure shows local SCR"
    );
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    let section = md
        .split("## Global and local SCR@0.4")
        .nth(1)
        .expect("a global-vs-local section");
    let row = section
        .lines()
        .find(|l| l.starts_with("| all |"))
        .expect("an all row");
    let global = all.stat(&Metric::scr("0.4")).unwrap();
    assert_eq!(
        row,
        format!(
            "| all | {:.1}% [{:.1}, {:.1}] | 50.0% [{:.1}, {:.1}] |",
            global.mean * 100.0,
            global.lo * 100.0,
            global.hi * 100.0,
            local.lo * 100.0,
            local.hi * 100.0
        )
    );
    assert!(md.contains("## Homogenisation and same-instance"), "{md}");
    let csv = std::fs::read_to_string(&files.summary_csv).unwrap();
    let header = csv.lines().next().unwrap();
    for column in ["local_scr@0.4", "homogenisation_lo", "same_instance_hi"] {
        assert!(header.split(',').any(|c| c == column), "{header}");
    }
    // Back from results.jsonl unchanged, and no local section without detection.
    let jsonl = std::fs::read_to_string(&files.results).unwrap();
    let back: Vec<ImageScores> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    scores.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    assert_eq!(back, scores);
    let plain = write_report(dir.path(), "toy", &toy_scores(), &options).unwrap();
    let md = std::fs::read_to_string(&plain.report_md).unwrap();
    assert!(!md.contains("local"), "{md}");
    let scr_vs_n = std::fs::read_to_string(&plain.figures[0]).unwrap();
    assert!(!scr_vs_n.contains("dashed: local"));
}

/// A generator's label (how its adapter says what the model really is) is printed with the model.
#[test]
fn model_labels_from_provenance_are_reported() {
    let mut scores = toy_scores();
    for s in &mut scores {
        s.provenance["label"] = "FLUX.1-dev, text only, as run in the paper (not PSR)".into();
    }
    let summary = aggregate(&scores, &Bootstrap::default()).unwrap();
    assert_eq!(
        summary.labels["toy"],
        "FLUX.1-dev, text only, as run in the paper (not PSR)"
    );
    let md = scores::report::report_md("toy", &summary);
    assert!(
        md.contains("- toy: FLUX.1-dev, text only, as run in the paper (not PSR)"),
        "{md}"
    );
    let plain = aggregate(&toy_scores(), &Bootstrap::default()).unwrap();
    assert!(!scores::report::report_md("toy", &plain).contains("What the models are"));
}
