//! `report.html` opened in a real headless browser (Debian's `chromium`): the page is
//! self-contained, its script runs without a console message, the screenshot is not blank, the
//! gallery cards are in the DOM, and the `#selftest` run of its script shows that the filters hide
//! cards and that τ moves the collapse marks, with the counts this test expects.
//!
//! Without chromium the browser test fails and says how to install it; set `SCRBENCH_CHROMIUM`
//! to use a browser elsewhere.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use benchmark::Scene;
use scores::{
    Bootstrap, Embeddings, Gallery, ImageScores, Metrics, Reference, ReportOptions,
    import_paper_results, report_html, score_image, write_report_html,
};

const MOSAIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/datasets/p13n-workshop/eval_outputs/mosaic_results.json"
);
/// A model name, prompt id, subject name and error that all need escaping.
const TOY: &str = r#"toy <b>&"model"</b>"#;
const PROMPT: &str = "p1 & <i>co</i>";
const EVIL_SUBJECT: &str = "cup <script>document.title='pwned'</script>";
const ERROR: &str = r#"decoder said <b>bad</b> & "worse""#;
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            ((seed * 70 + x + y) % 256) as u8,
        ])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

fn embeddings(v: [f32; 3]) -> Embeddings {
    Embeddings {
        clip: Some(v.to_vec()),
        dino: Some(v.to_vec()),
        dinov2: Some(v.to_vec()),
    }
}

fn toy(
    prompt_id: &str,
    seed: u64,
    scene: Scene,
    generated: [f32; 3],
    subjects: &[(&str, [f32; 3])],
) -> ImageScores {
    let refs: Vec<Embeddings> = subjects.iter().map(|&(_, v)| embeddings(v)).collect();
    let references: Vec<Reference> = subjects
        .iter()
        .zip(&refs)
        .map(|(&(name, _), embeddings)| Reference { name, embeddings })
        .collect();
    let metrics = score_image(
        &embeddings(generated),
        &references,
        Some(&[1.0, 1.0, 0.0]),
        &[0.4, 0.5, 0.6],
    )
    .unwrap();
    ImageScores {
        model: TOY.into(),
        prompt_id: prompt_id.into(),
        seed,
        subject_count: subjects.len(),
        scene,
        image_digest: None,
        metrics,
        provenance: serde_json::json!({"source": "test <toy>", "prompt": "a dog & a <cup>"}),
        error: None,
    }
}

/// The toy model first (so the self-test's model filter uses its awkward name), then the paper's
/// published MOSAIC scores; the toy model has per-subject cosines, thumbnails and one failure.
fn study() -> (Vec<ImageScores>, Gallery) {
    let mut scores = vec![
        toy(
            PROMPT,
            1,
            Scene::Neutral,
            [1.0, 0.0, 0.0],
            // cosines 0.45 and 0.55: collapsed at τ = 0.5 and 0.6, then only at 0.6
            &[
                ("dog", [0.45, 0.893, 0.0]),
                (EVIL_SUBJECT, [0.55, 0.0, 0.835]),
            ],
        ),
        toy(
            "p2",
            2,
            Scene::Occlusion,
            [1.0, 1.0, 0.0],
            &[
                ("dog", [1.0, 0.0, 0.0]),
                ("hat", [1.0, 1.2, 0.0]),
                ("lamp", [0.0, 0.3, 1.0]),
            ],
        ),
        toy(
            "p2",
            3,
            Scene::Occlusion,
            [0.2, 1.0, 0.4],
            &[
                ("dog", [1.0, 0.0, 0.0]),
                ("hat", [1.0, 1.2, 0.0]),
                ("lamp", [0.0, 0.3, 1.0]),
            ],
        ),
    ];
    scores.push(ImageScores {
        model: TOY.into(),
        prompt_id: "p3".into(),
        seed: 1,
        subject_count: 2,
        scene: Scene::Interaction,
        image_digest: None,
        metrics: Metrics::default(),
        provenance: serde_json::json!({"source": "test <toy>"}),
        error: Some(ERROR.into()),
    });
    scores.extend(import_paper_results(Path::new(MOSAIC)).expect("published MOSAIC scores"));

    let mut gallery = Gallery::default();
    gallery.insert_image(TOY, PROMPT, 1, png(96, 96, 1));
    gallery.insert_image(TOY, "p2", 2, png(96, 96, 2));
    gallery.insert_image(TOY, "p3", 1, png(96, 96, 3));
    gallery.insert_reference("dog", png(32, 32, 4));
    gallery.insert_reference(EVIL_SUBJECT, png(32, 32, 5));
    gallery.insert_reference("hat", png(32, 32, 6));
    (scores, gallery)
}

fn options() -> ReportOptions {
    ReportOptions {
        bootstrap: Bootstrap {
            resamples: 200,
            ..Bootstrap::default()
        },
        figures: false,
    }
}

/// What the page's `#selftest` should report for these scores, as its script writes it.
fn expected_selftest(scores: &[ImageScores], thresholds: &[String]) -> String {
    let count = |keep: &dyn Fn(&ImageScores) -> bool| scores.iter().filter(|s| keep(s)).count();
    let first_n = scores.iter().map(|s| s.subject_count).min().unwrap();
    let mut parts = vec![
        format!("cards={}", scores.len()),
        format!("all={}", scores.len()),
        format!("model[{TOY}]={}", count(&|s| s.model == TOY)),
        format!("n[{first_n}]={}", count(&|s| s.subject_count == first_n)),
    ];
    for scene in Scene::ALL {
        parts.push(format!("scene[{scene}]={}", count(&|s| s.scene == scene)));
    }
    parts.push(format!(
        "combined={}",
        count(&|s| s.model == TOY && s.subject_count == first_n && s.scene == Scene::Neutral)
    ));
    for tau in thresholds {
        let t: f64 = tau.parse().unwrap();
        let collapsed: usize = scores
            .iter()
            .flat_map(|s| &s.metrics.subjects)
            .filter(|s| s.dinov2.is_some_and(|c| c < t))
            .count();
        parts.push(format!("collapsed@{tau}={collapsed}"));
    }
    format!("selftest ok: {}", parts.join(" "))
}

#[test]
fn page_is_self_contained_escaped_and_deterministic() {
    let (scores, gallery) = study();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report_html(dir.path(), "html <study>", &scores, &options(), &gallery)
        .expect("report writes");
    assert_eq!(files.report_html, dir.path().join("report.html"));
    assert!(files.report.report_md.exists());
    let html = std::fs::read_to_string(&files.report_html).unwrap();
    let again = report_html("html <study>", &files.report.summary, &scores, &gallery).unwrap();
    assert_eq!(html, again, "same input, same page");

    // Nothing loads from outside: every src/href is a data: URI or an in-page anchor.
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let value = &html[at + attr.len()..];
            assert!(
                value.starts_with("data:") || value.starts_with('#'),
                "{attr}{}",
                &value[..value.len().min(60)]
            );
        }
    }
    for external in ["<link", "@import", "url(", "<iframe", "<object", "<embed"] {
        assert!(!html.contains(external), "page contains {external}");
    }
    assert_eq!(html.matches("<script").count(), 1, "one inline script");
    assert_eq!(html.matches("data:image/png;base64,").count(), 3 + 6);
    assert_eq!(html.matches("<svg").count(), 3, "three inline figures");

    // Text from the input is escaped wherever it goes.
    for raw in [TOY, PROMPT, EVIL_SUBJECT, ERROR, "<toy>", "html <study>"] {
        assert!(!html.contains(raw), "unescaped: {raw}");
    }
    assert!(html.contains("toy &lt;b&gt;&amp;&quot;model&quot;&lt;/b&gt;"));
    assert!(html.contains("cup &lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
    assert!(
        html.contains("Failed: decoder said &lt;b&gt;bad&lt;/b&gt; &amp; &quot;worse&quot;</p>")
    );

    // Table 1 with the paper's printed numbers (MOSAIC, N = 2 and N = 10), as in report.md.
    assert!(html.contains("<td>0.261 / 0.695 / 0.425 / 48.9%</td>"));
    assert!(html.contains("<td>0.300 / 0.504 / 0.110 / 96.0%</td>"));
    let md = std::fs::read_to_string(&files.report.report_md).unwrap();
    for heading in md.lines().filter_map(|l| l.strip_prefix("## ")) {
        assert!(
            html.contains(&format!(">{}</h2>", heading.replace('<', "&lt;"))),
            "report.md section {heading:?} missing from report.html"
        );
    }
    assert!(html.contains("id=\"figure-scr_vs_n\""));
    assert_eq!(html.matches("<article class=\"card").count(), scores.len());
    // Collapse marked at the headline τ = 0.4 without the script.
    let collapsed_04 = scores
        .iter()
        .flat_map(|s| &s.metrics.subjects)
        .filter(|s| s.dinov2.is_some_and(|c| c < 0.4))
        .count();
    assert!(collapsed_04 > 0);
    assert_eq!(
        html.matches("<li class=\"subject collapsed\"").count(),
        collapsed_04
    );
}

/// The browser: `SCRBENCH_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SCRBENCH_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the report.html browser test needs a headless chromium, and none was found: \
         run `apt-get install -y chromium` (Debian), or set SCRBENCH_CHROMIUM to a chromium binary"
    );
}

/// Runs headless chromium on `url` with `mode` (`--screenshot=…` or `--dump-dom`); returns its
/// stdout and stderr. Kills it (by its PID) if it runs past [`BROWSER_TIMEOUT`].
fn run_chromium(work: &Path, url: &str, mode: &str) -> (String, String) {
    let profile = tempfile::tempdir_in(work).unwrap();
    let stdout_path = work.join("chromium.stdout");
    let stderr_path = work.join("chromium.stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): run `apt-get install -y chromium` (Debian)")
        });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let pid = child.id();
            child.kill().ok();
            child.wait().ok();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "chromium (pid {pid}) ran past {BROWSER_TIMEOUT:?} and was killed; stderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        status.success(),
        "chromium {mode} failed: {status}\n{stderr}"
    );
    // Every console message of the page (console.log/error, uncaught exceptions, CSP violations
    // from a blocked load) is logged as `…:CONSOLE:…] "message", source: …`.
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console.is_empty(),
        "the page logged to the console ({mode}):\n{}",
        console.join("\n")
    );
    (stdout, stderr)
}

/// The text of the element with `id`, as the DOM dump serialises it, unescaped.
fn element_text(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM dump"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[test]
fn report_html_in_headless_chromium() {
    let browser = chromium();
    let (scores, gallery) = study();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report_html(dir.path(), "browser", &scores, &options(), &gallery).unwrap();
    let url = format!("file://{}", files.report_html.display());

    // The page as a reader sees it first.
    let shot = dir.path().join("shot.png");
    run_chromium(
        dir.path(),
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    let image = image::open(&shot)
        .unwrap_or_else(|e| panic!("{} did not write a PNG screenshot: {e}", browser.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), (1280, 2000));
    let pixels = image.pixels().count();
    let non_white = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let colours: BTreeSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    assert!(
        non_white * 20 > pixels,
        "screenshot nearly blank: {non_white} of {pixels} pixels not white"
    );
    assert!(
        colours.len() > 64,
        "screenshot nearly blank: {} colours",
        colours.len()
    );

    // The DOM after the script ran, with its self-test.
    let (dom, _) = run_chromium(dir.path(), &format!("{url}#selftest"), "--dump-dom");
    assert!(
        dom.contains("data-js=\"ready\""),
        "the page's script did not run:\n{}",
        &dom[..dom.len().min(500)]
    );
    assert_eq!(dom.matches("<article class=\"card").count(), scores.len());
    assert!(dom.contains("data:image/png;base64,"));
    let thresholds = files.report.summary.thresholds.clone();
    assert_eq!(thresholds, ["0.4", "0.5", "0.6"]);
    assert_eq!(
        element_text(&dom, "selftest"),
        expected_selftest(&scores, &thresholds)
    );
    // The self-test restores the page: all cards shown, marks back at the headline τ.
    assert_eq!(
        element_text(&dom, "gallery-count"),
        format!("{0} of {0} images shown", scores.len())
    );
    assert!(!dom.contains("<title>pwned"));
}
