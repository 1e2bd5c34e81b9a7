//! Import and fetch against the shared copy of the paper's repository, verified by the committed
//! digests: happy paths, idempotence, tampering, missing files, HTTP errors and no network.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use dataset::{Error, Part, Spec};

/// `../shared/datasets/p13n-workshop` beside the repository root (read-only, never committed).
fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/p13n-workshop")
}

fn p13n() -> Spec {
    dataset::spec("p13n-workshop").expect("embedded manifest parses")
}

/// Asserts every file of `parts` is in `dest` with its pinned digest.
fn assert_complete(spec: &Spec, parts: &[Part], dest: &Path) {
    for part in parts {
        for (path, expected) in spec.manifest.files(part) {
            assert_eq!(
                dataset::sha256_file(&dest.join(path)).unwrap(),
                expected,
                "{path}"
            );
        }
    }
}

/// Copies the benchmark part of the shared copy into a fresh folder laid out like the repository.
fn copy_benchmark(spec: &Spec) -> tempfile::TempDir {
    let from = tempfile::tempdir().unwrap();
    for (path, _) in spec.manifest.files(&Part::Benchmark) {
        let target = from.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(shared().join(path), target).unwrap();
    }
    from
}

#[test]
fn import_verifies_everything_and_is_idempotent() {
    let spec = p13n();
    let parts = [Part::Benchmark, Part::Results("mosaic".into())];
    let dest = tempfile::tempdir().unwrap();

    let first = dataset::import(&spec, &parts, &shared(), dest.path()).unwrap();
    assert_eq!(
        (first.written.len(), first.already_present.len()),
        (41 + 300, 0)
    );
    assert!(
        first
            .written
            .iter()
            .any(|p| p == "val_dataset/Siamese cat.jpg")
    );
    assert_complete(&spec, &parts, dest.path());

    let second = dataset::import(&spec, &parts, &shared(), dest.path()).unwrap();
    assert_eq!(
        (
            second.written.len(),
            second.already_present.len(),
            second.bytes
        ),
        (0, 341, 0)
    );
}

#[test]
fn tampered_file_is_never_written() {
    let spec = p13n();
    let from = copy_benchmark(&spec);
    let tampered = from.path().join("val_dataset/cup.jpg");
    let mut bytes = std::fs::read(&tampered).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();

    let dest = tempfile::tempdir().unwrap();
    let err = dataset::import(&spec, &[Part::Benchmark], from.path(), dest.path()).unwrap_err();
    let expected = spec
        .manifest
        .files(&Part::Benchmark)
        .into_iter()
        .find(|(p, _)| *p == "val_dataset/cup.jpg")
        .unwrap()
        .1;
    let Error::Digest {
        path,
        expected: e,
        actual,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (path.as_str(), e.as_str()),
        ("val_dataset/cup.jpg", expected)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "val_dataset/cup.jpg: sha256 mismatch: expected {expected}, got {actual}; the file was not written"
        )
    );
    assert!(!dest.path().join("val_dataset/cup.jpg").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dest.path().join("val_dataset"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn missing_source_file_is_named() {
    let spec = p13n();
    let from = tempfile::tempdir().unwrap();
    std::fs::copy(shared().join("LICENSE"), from.path().join("LICENSE")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = dataset::import(&spec, &[Part::Benchmark], from.path(), dest.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "eval_outputs/mosaic_results.json: missing from the source folder {}",
            from.path().display()
        )
    );
    assert!(dest.path().join("LICENSE").is_file());
}

#[test]
fn results_without_digests_are_refused() {
    let mut spec = p13n();
    spec.manifest
        .entries
        .retain(|(p, _)| !p.starts_with("results/xverse/"));
    let dest = tempfile::tempdir().unwrap();
    let err = dataset::import(
        &spec,
        &[Part::Results("xverse".into())],
        &shared(),
        dest.path(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no digests are pinned for results of `xverse` in dataset `p13n-workshop` (pinned: mosaic, psr); \
         refusing to fetch unverifiable files"
    );
    let err = dataset::spec("nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown dataset `nope` (known: p13n-workshop)"
    );
}

/// Serves the shared copy as `/<repo>/<commit>/<path>` on 127.0.0.1, with 404 for `missing` paths
/// and for anything else it does not have. Returns the base URL.
fn serve(spec: &Spec, missing: &[&str]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let prefix = format!("/{}/{}/", spec.repo, spec.commit);
    let missing: HashSet<String> = missing.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            let target = request.split(' ').nth(1).unwrap_or_default();
            let body = target
                .strip_prefix(&prefix)
                .map(percent_decode)
                .filter(|p| !missing.contains(p))
                .and_then(|p| std::fs::read(shared().join(p)).ok());
            let (status, body) = match body {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", b"404: Not Found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body));
        }
    });
    base
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn fetch_downloads_verifies_and_resumes() {
    let spec = p13n();
    let parts = [Part::Benchmark];
    let dest = tempfile::tempdir().unwrap();

    let err = dataset::fetch(
        &spec,
        &parts,
        dest.path(),
        &serve(&spec, &["val_dataset/hat.jpg"]),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Http { status: 404, .. }), "{message}");
    assert!(
        message.starts_with("val_dataset/hat.jpg: download from http://127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("HTTP status 404"), "{message}");
    assert!(
        dest.path().join("val_dataset/Siamese cat.jpg").is_file(),
        "files before the failure are kept"
    );
    assert!(!dest.path().join("val_dataset/hat.jpg").exists());

    let report = dataset::fetch(&spec, &parts, dest.path(), &serve(&spec, &[])).unwrap();
    assert!(report.written.iter().any(|p| p == "val_dataset/hat.jpg"));
    assert!(
        report
            .already_present
            .iter()
            .any(|p| p == "val_dataset/Siamese cat.jpg")
    );
    assert_eq!(report.written.len() + report.already_present.len(), 41);
    assert_complete(&spec, &parts, dest.path());
}

#[test]
fn fetch_without_network_says_how_to_import() {
    let spec = p13n();
    let dest = tempfile::tempdir().unwrap();
    let err =
        dataset::fetch(&spec, &[Part::Benchmark], dest.path(), "http://127.0.0.1:1").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Network { .. }), "{message}");
    assert!(
        message.starts_with("LICENSE: download from http://127.0.0.1:1/ZHIHANCHEN03/"),
        "{message}"
    );
    assert!(
        message.contains("`scrbench dataset fetch p13n-workshop --from DIR`"),
        "{message}"
    );
    assert!(
        message.contains("`cargo xtask dataset fetch p13n-workshop --from DIR`"),
        "{message}"
    );
}
