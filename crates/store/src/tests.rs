//! Tests of the store as a whole: blobs, entries and miss reasons, locks, maintenance.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::fsutil::hostname;
use crate::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn store() -> std::result::Result<(tempfile::TempDir, Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    Ok((dir, store))
}

fn key(stage: &str) -> ActionKey {
    ActionKey {
        stage: stage.to_owned(),
        stage_version: 1,
        params: BTreeMap::from([
            ("seed".to_owned(), json!(7)),
            ("text".to_owned(), json!("a cat")),
        ]),
        inputs: BTreeMap::from([("ref.0".to_owned(), Digest::of_bytes(b"ref"))]),
        model: BTreeMap::from([("name".to_owned(), "flux".to_owned())]),
    }
}

/// Rewrites a file in place. Sleeps first so that the change gets a later timestamp than the
/// stat cache saw, as it would outside a test (see the racy-entry notes in `statcache`).
fn rewrite(path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    thread::sleep(Duration::from_millis(20));
    let mut bytes = fs::read(path)?;
    change(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    fs::write(path, bytes)
}

/// Stores `bytes` and records them as the `image` output of `key` for `item`.
fn compute(store: &Store, item: &str, key: &ActionKey, bytes: &[u8]) -> Result<ActionEntry> {
    let image = store.put_bytes(bytes)?;
    store.record(
        item,
        key,
        BTreeMap::from([("image".to_owned(), image)]),
        json!({"seconds": 1}),
    )
}

fn miss(lookup: Lookup) -> Vec<MissReason> {
    match lookup {
        Lookup::Hit(entry) => panic!("unexpected hit {entry:?}"),
        Lookup::Miss(reasons) => reasons,
    }
}

fn dead_pid() -> std::io::Result<u32> {
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

#[test]
fn store_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
    shareable::<LockGuard>();
}

#[test]
fn key_digest_is_canonical() -> TestResult {
    let a: ActionKey = serde_json::from_str(
        r#"{"stage":"s","stage_version":1,"params":{"b":{"y":1,"x":[2,{"q":1,"p":2}]},"a":"t"},
            "inputs":{},"model":{"n":"m"}}"#,
    )?;
    let b: ActionKey = serde_json::from_str(
        r#"{"model":{"n":"m"},"inputs":{},"params":{"a":"t","b":{"x":[2,{"p":2,"q":1}],"y":1}},
            "stage_version":1,"stage":"s"}"#,
    )?;
    assert_eq!(a.digest(), b.digest());
    let canonical = r#"{"inputs":{},"model":{"n":"m"},"params":{"a":"t","b":{"x":[2,{"p":2,"q":1}],"y":1}},"stage":"s","stage_version":1}"#;
    assert_eq!(a.digest(), Digest::of_bytes(canonical.as_bytes()));

    let base = key("generate");
    let mut changed = Vec::new();
    let mut k = base.clone();
    k.stage = "inspect".into();
    changed.push(k);
    let mut k = base.clone();
    k.stage_version = 2;
    changed.push(k);
    let mut k = base.clone();
    k.params.insert("seed".into(), json!(8));
    changed.push(k);
    let mut k = base.clone();
    k.params.insert("extra".into(), json!(null));
    changed.push(k);
    let mut k = base.clone();
    k.inputs.insert("ref.0".into(), Digest::of_bytes(b"other"));
    changed.push(k);
    let mut k = base.clone();
    k.model.insert("revision".into(), "2".into());
    changed.push(k);
    let digests: BTreeSet<Digest> = changed
        .iter()
        .map(ActionKey::digest)
        .chain([base.digest()])
        .collect();
    assert_eq!(digests.len(), changed.len() + 1);
    Ok(())
}

#[test]
fn put_and_read_round_trip() -> TestResult {
    let (_dir, store) = store()?;
    let digest = store.put_bytes(b"hello")?;
    assert_eq!(digest, Digest::of_bytes(b"hello"));
    assert_eq!(store.read_blob(&digest)?, b"hello");
    let mode = fs::metadata(store.blob_path(&digest))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o444);

    let tmp = store.temp_file(".png")?;
    let tmp_path = tmp.path().to_path_buf();
    assert!(tmp_path.starts_with(store.root().join("tmp")));
    assert!(tmp_path.to_string_lossy().ends_with(".png"));
    assert!(!tmp_path.exists(), "the temporary file is not created");
    fs::write(&tmp_path, b"image bytes")?;
    let digest = store.put_file(tmp)?;
    assert!(!tmp_path.exists());
    assert_eq!(store.read_blob(&digest)?, b"image bytes");
    assert!(matches!(
        store.read_blob(&Digest::of_bytes(b"nope")),
        Err(Error::MissingBlob(_))
    ));
    Ok(())
}

#[test]
fn temp_file_is_removed_on_drop() -> TestResult {
    let (_dir, store) = store()?;
    let tmp = store.temp_file(".json")?;
    let path = tmp.path().to_path_buf();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        name.starts_with(&format!(
            "{}-{}-",
            crate::tmp::writer_tag(),
            std::process::id()
        )),
        "{name}"
    );
    fs::write(&path, b"x")?;
    drop(tmp);
    assert!(!path.exists());
    drop(store.temp_file("")?); // never created: nothing to do
    Ok(())
}

#[test]
fn identical_content_is_stored_once() -> TestResult {
    let (_dir, store) = store()?;
    let a = store.put_bytes(b"same")?;
    let tmp = store.temp_file("")?;
    let tmp_path = tmp.path().to_path_buf();
    fs::write(&tmp_path, b"same")?;
    let b = store.put_file(tmp)?;
    assert_eq!(a, b);
    assert!(!tmp_path.exists());
    let stats = store.stats()?;
    assert_eq!((stats.blobs, stats.blob_bytes, stats.tmp_files), (1, 4, 0));
    Ok(())
}

#[test]
fn flipped_byte_is_corrupt_and_invalidates_the_entry() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    let entry = compute(&store, "item", &k, b"pixels")?;
    let image = entry.outputs["image"];
    assert!(matches!(store.lookup("item", &k)?, Lookup::Hit(_)));

    rewrite(&store.blob_path(&image), |bytes| bytes[2] ^= 1)?;
    assert_eq!(store.check_blob(&image)?, BlobState::Corrupt);
    assert!(
        !store.blob_path(&image).exists(),
        "a corrupt blob is removed"
    );
    assert_eq!(store.check_blob(&image)?, BlobState::Missing);

    compute(&store, "item", &k, b"pixels")?;
    rewrite(&store.blob_path(&image), |bytes| bytes[0] ^= 0x80)?;
    let reasons = miss(store.lookup("item", &k)?);
    assert_eq!(
        reasons,
        vec![MissReason::OutputCorrupt {
            output: "image".into(),
            digest: image
        }]
    );
    assert_eq!(store.entry(&k)?, None, "the entry is removed");
    // Now the entry is gone, and the last key is this key: nothing explains the miss.
    assert_eq!(miss(store.lookup("item", &k)?), vec![MissReason::Unknown]);
    Ok(())
}

#[test]
fn truncated_blob_is_corrupt() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    let image = compute(&store, "item", &k, b"a longer blob")?.outputs["image"];
    rewrite(&store.blob_path(&image), |bytes| bytes.truncate(3))?;
    let reasons = miss(store.lookup("item", &k)?);
    assert_eq!(
        reasons,
        vec![MissReason::OutputCorrupt {
            output: "image".into(),
            digest: image
        }]
    );
    assert!(!store.blob_path(&image).exists());
    assert!(matches!(
        store.read_blob(&image),
        Err(Error::MissingBlob(_))
    ));

    let missing = compute(&store, "item", &k, b"a longer blob")?.outputs["image"];
    fs::remove_file(store.blob_path(&missing))?;
    let reasons = miss(store.lookup("item", &k)?);
    assert_eq!(
        reasons,
        vec![MissReason::OutputMissing {
            output: "image".into(),
            digest: missing
        }]
    );
    Ok(())
}

#[test]
fn read_blob_verifies_the_bytes_read() -> TestResult {
    let (_dir, store) = store()?;
    let digest = store.put_bytes(b"content")?;
    rewrite(&store.blob_path(&digest), |bytes| bytes[0] = b'C')?;
    assert!(matches!(store.read_blob(&digest), Err(Error::MissingBlob(d)) if d == digest));
    assert!(!store.blob_path(&digest).exists());
    Ok(())
}

#[test]
fn stat_cache_avoids_rehashing_until_the_file_changes() -> TestResult {
    let (dir, store) = store()?;
    let blob = store.put_bytes(b"blob bytes")?;
    assert_eq!(store.check_blob(&blob)?, BlobState::Ok);
    assert_eq!(
        store.hash_count(),
        0,
        "a blob written by the store is trusted"
    );

    let input = dir.path().join("ref.png");
    fs::write(&input, b"reference")?;
    thread::sleep(Duration::from_millis(
        2 * statcache::RACY_WINDOW_NS as u64 / 1_000_000,
    ));
    assert_eq!(store.file_digest(&input)?, Digest::of_bytes(b"reference"));
    assert_eq!(store.hash_count(), 1);
    assert_eq!(store.file_digest(&input)?, Digest::of_bytes(b"reference"));
    assert_eq!(
        store.hash_count(),
        1,
        "unchanged metadata: served from the cache"
    );

    // Same length, mtime restored: only the ctime tells.
    for path in [input.clone(), store.blob_path(&blob)] {
        let mtime = fs::metadata(&path)?.modified()?;
        rewrite(&path, |bytes| bytes[0] ^= 1)?;
        fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(mtime)?;
        assert_eq!(fs::metadata(&path)?.modified()?, mtime);
    }
    assert_ne!(store.file_digest(&input)?, Digest::of_bytes(b"reference"));
    assert_eq!(store.check_blob(&blob)?, BlobState::Corrupt);

    let missing = store.file_digest(&dir.path().join("missing.png"));
    assert!(matches!(missing, Err(Error::Io { path, .. }) if path.ends_with("missing.png")));
    Ok(())
}

#[test]
fn stat_cache_persists_across_handles() -> TestResult {
    let (dir, store) = store()?;
    let digests: Vec<Digest> = (0..2000)
        .map(|i| store.put_bytes(format!("blob {i}").as_bytes()))
        .collect::<Result<_>>()?;
    store.flush()?;
    drop(store);

    let store = Store::open(dir.path())?;
    for digest in &digests {
        assert_eq!(store.check_blob(digest)?, BlobState::Ok);
    }
    assert_eq!(
        store.hash_count(),
        0,
        "verified through the persisted stat cache"
    );
    Ok(())
}

#[test]
fn lookup_explains_misses() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    assert_eq!(miss(store.lookup("item", &k)?), vec![MissReason::New]);
    compute(&store, "item", &k, b"v1")?;
    let Lookup::Hit(entry) = store.lookup("item", &k)? else {
        panic!("expected a hit")
    };
    assert_eq!((entry.key, entry.meta), (k.clone(), json!({"seconds": 1})));
    assert_eq!(store.last_key("generate", "item")?, Some(k.clone()));
    assert!(
        matches!(store.lookup("other item", &k)?, Lookup::Hit(_)),
        "entries are shared by key"
    );

    let mut changed = k.clone();
    changed.params.insert("seed".into(), json!(8));
    changed.params.insert("steps".into(), json!(20));
    changed.params.remove("text");
    assert_eq!(
        miss(store.lookup("item", &changed)?),
        vec![
            MissReason::Param {
                name: "seed".into(),
                old: Some(json!(7)),
                new: Some(json!(8))
            },
            MissReason::Param {
                name: "steps".into(),
                old: None,
                new: Some(json!(20))
            },
            MissReason::Param {
                name: "text".into(),
                old: Some(json!("a cat")),
                new: None
            },
        ]
    );

    let mut changed = k.clone();
    changed.stage_version = 2;
    changed
        .inputs
        .insert("ref.0".into(), Digest::of_bytes(b"new ref"));
    changed.model.insert("name".into(), "sdxl".into());
    assert_eq!(
        miss(store.lookup("item", &changed)?),
        vec![
            MissReason::StageVersion { old: 1, new: 2 },
            MissReason::Input {
                name: "ref.0".into(),
                old: Some(Digest::of_bytes(b"ref")),
                new: Some(Digest::of_bytes(b"new ref")),
            },
            MissReason::Model {
                field: "name".into(),
                old: Some("flux".into()),
                new: Some("sdxl".into())
            },
        ]
    );

    store.record_failure("item", &changed, "out of memory")?;
    assert_eq!(
        miss(store.lookup("item", &changed)?),
        vec![MissReason::Failed {
            message: "out of memory".into()
        }]
    );
    assert_eq!(
        store.failure(&changed)?.map(|f| f.item),
        Some("item".to_owned())
    );
    assert_eq!(store.last_key("generate", "item")?, Some(changed.clone()));
    // Misses are now explained against the failed key, the item's last.
    let mut next = changed.clone();
    next.model.insert("name".into(), "flux2".into());
    assert_eq!(
        miss(store.lookup("item", &next)?),
        vec![MissReason::Model {
            field: "name".into(),
            old: Some("sdxl".into()),
            new: Some("flux2".into())
        }]
    );
    // Success clears the failure.
    compute(&store, "item", &changed, b"v2")?;
    assert_eq!(store.failure(&changed)?, None);
    assert!(matches!(store.lookup("item", &changed)?, Lookup::Hit(_)));
    Ok(())
}

#[test]
fn unreadable_entry_is_treated_as_absent() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    compute(&store, "item", &k, b"v1")?;
    let path = store.keyed_path("actions", &k.stage, &k.digest());
    let text = fs::read(&path)?;
    fs::write(&path, &text[..text.len() / 2])?;
    assert_eq!(miss(store.lookup("item", &k)?), vec![MissReason::Unknown]);
    assert!(!path.exists());
    Ok(())
}

#[test]
fn record_requires_stored_outputs() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    let stored = store.put_bytes(b"stored")?;
    let absent = Digest::of_bytes(b"absent");
    let outputs = BTreeMap::from([("a".to_owned(), stored), ("b".to_owned(), absent)]);
    let result = store.record("item", &k, outputs, json!({}));
    assert!(matches!(result, Err(Error::MissingBlob(d)) if d == absent));
    assert_eq!(store.entry(&k)?, None);
    assert_eq!(store.last_key("generate", "item")?, None);
    assert_eq!(store.stats()?.actions.len(), 0);
    Ok(())
}

#[test]
fn lock_is_exclusive_until_dropped() -> TestResult {
    let (_dir, store) = store()?;
    let key = Digest::of_bytes(b"key");
    let guard = store.try_lock(&key)?;
    assert!(guard.is_some());
    assert!(store.try_lock(&key)?.is_none());
    let timeout = store.lock(&key, Duration::from_millis(100));
    assert!(
        matches!(timeout, Err(Error::LockTimeout { holder, .. }) if holder.contains(&std::process::id().to_string()))
    );
    drop(guard);
    assert!(!store.lock_path(&key).exists());
    assert!(store.try_lock(&key)?.is_some());
    Ok(())
}

#[test]
fn lock_of_a_dead_holder_is_broken() -> TestResult {
    let (_dir, store) = store()?;
    let key = Digest::of_bytes(b"key");
    let holder = json!({"host": hostname(), "pid": dead_pid()?, "nonce": "n", "acquired": 0});
    fs::write(store.lock_path(&key), holder.to_string())?;
    let guard = store.lock(&key, Duration::from_secs(1))?;
    assert!(guard.is_ours());
    Ok(())
}

#[test]
fn a_lock_records_host_node_and_pid() -> TestResult {
    let (_dir, store) = store()?;
    let key = Digest::of_bytes(b"key");
    let _guard = store.try_lock(&key)?.ok_or("lock is free")?;
    let holder: serde_json::Value = serde_json::from_slice(&fs::read(store.lock_path(&key))?)?;
    assert_eq!(holder["host"], hostname());
    assert_eq!(holder["node"], crate::fsutil::node_id());
    assert!(
        crate::fsutil::node_id().contains("/pid:["),
        "{}",
        crate::fsutil::node_id()
    );
    assert_eq!(holder["pid"], std::process::id());
    Ok(())
}

/// On a shared filesystem a pid means nothing to another host: another host's lock whose pid is
/// not running here is respected until its lease expires.
#[test]
fn another_hosts_lock_is_judged_by_its_lease_not_by_its_pid() -> TestResult {
    let (_dir, store) = store()?;
    let store = store.with_lease(Duration::from_secs(30));
    let dead = dead_pid()?;
    for (name, holder) in [
        (
            "another host",
            json!({"host": "node17", "pid": dead, "nonce": "n", "acquired": 0}),
        ),
        (
            "another host of an older version",
            json!({"host": "node17", "node": "", "pid": dead, "nonce": "n", "acquired": 0}),
        ),
        (
            "another machine with our host name",
            json!({"host": hostname(), "node": "00000000-0000-0000-0000-000000000000/pid:[4026531836]",
                   "pid": dead, "nonce": "n", "acquired": 0}),
        ),
        (
            "a container of this machine with its own PID namespace",
            json!({"host": hostname(),
                   "node": format!("{}/pid:[1]", crate::fsutil::node_id().split('/').next().unwrap_or("")),
                   "pid": dead, "nonce": "n", "acquired": 0}),
        ),
    ] {
        let key = Digest::of_bytes(name.as_bytes());
        let path = store.lock_path(&key);
        fs::write(&path, holder.to_string())?;
        assert!(
            store.try_lock(&key)?.is_none(),
            "{name}: a fresh lease is respected"
        );
        assert!(
            matches!(
                store.lock(&key, Duration::from_millis(100)),
                Err(Error::LockTimeout { .. })
            ),
            "{name}"
        );
        fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(SystemTime::now() - Duration::from_secs(31))?;
        assert!(
            store.try_lock(&key)?.is_some(),
            "{name}: an expired lease is broken"
        );
    }
    // This host and node, dead pid: broken at once, lease or not.
    let key = Digest::of_bytes(b"local");
    let holder = json!({"host": hostname(), "node": crate::fsutil::node_id(), "pid": dead,
                        "nonce": "n", "acquired": 0});
    fs::write(store.lock_path(&key), holder.to_string())?;
    assert!(store.try_lock(&key)?.is_some());
    Ok(())
}

#[test]
fn expired_lease_is_broken_and_live_leases_are_renewed() -> TestResult {
    let (dir, store) = store()?;
    let store = store.with_lease(Duration::from_millis(300));
    let key = Digest::of_bytes(b"key");
    let path = store.lock_path(&key);
    let holder = json!({"host": "elsewhere", "pid": 1, "nonce": "n", "acquired": 0});
    fs::write(&path, holder.to_string())?;
    assert!(
        store.try_lock(&key)?.is_none(),
        "a fresh lease of another host is respected"
    );
    fs::File::options()
        .write(true)
        .open(&path)?
        .set_modified(SystemTime::now() - Duration::from_secs(10))?;
    let guard = store.try_lock(&key)?;
    assert!(guard.is_some(), "an expired lease is broken");

    // The holder keeps renewing its lease: another process cannot take it.
    let other = Store::open(dir.path())?.with_lease(Duration::from_millis(300));
    thread::sleep(Duration::from_millis(700));
    assert!(other.try_lock(&key)?.is_none());
    drop(guard);
    assert!(other.try_lock(&key)?.is_some());
    Ok(())
}

#[test]
fn racing_threads_compute_once() -> TestResult {
    let (_dir, store) = store()?;
    let store = Arc::new(store);
    let computed = Arc::new(AtomicUsize::new(0));
    let k = key("generate");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, computed, k) = (store.clone(), computed.clone(), k.clone());
            thread::spawn(move || -> Result<()> {
                if let Lookup::Hit(_) = store.lookup("item", &k)? {
                    return Ok(());
                }
                let _guard = store.lock(&k.digest(), Duration::from_secs(20))?;
                if let Lookup::Miss(_) = store.lookup("item", &k)? {
                    computed.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(50));
                    compute(&store, "item", &k, b"once")?;
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "thread panicked")??;
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    Ok(())
}

#[test]
fn open_removes_temporary_files_of_dead_writers() -> TestResult {
    let (dir, store) = store()?;
    let tmp = store.root().join("tmp");
    let dead = tmp.join(format!(
        "{}-{}-0-0123456789abcdef.png",
        crate::tmp::writer_tag(),
        dead_pid()?
    ));
    let live = tmp.join(format!(
        "{}-{}-0-0123456789abcdef.png",
        crate::tmp::writer_tag(),
        std::process::id()
    ));
    let foreign = tmp.join("otherhost-1-0-0123456789abcdef");
    // Another host's writer whose pid is not running here is alive as far as we can tell, and so
    // is one of another machine or PID namespace with our host name, or of an older version.
    let same_name = tmp.join(format!(
        "{}.0badc0de-{}-0-0123456789abcdef",
        hostname(),
        dead_pid()?
    ));
    let untagged = tmp.join(format!("{}-{}-0-0123456789abcdef", hostname(), dead_pid()?));
    let foreign_dead_here = tmp.join(format!("otherhost-{}-0-0123456789abcdef", dead_pid()?));
    let old = tmp.join("otherhost-2-0-0123456789abcdef");
    for path in [
        &dead,
        &live,
        &foreign,
        &foreign_dead_here,
        &same_name,
        &untagged,
        &old,
    ] {
        fs::write(path, b"partial")?;
    }
    let day_ago = SystemTime::now() - Duration::from_secs(25 * 3600);
    fs::File::options()
        .write(true)
        .open(&old)?
        .set_modified(day_ago)?;
    drop(store);

    let _store = Store::open(dir.path())?;
    assert!(!dead.exists());
    assert!(live.exists());
    assert!(foreign.exists());
    assert!(foreign_dead_here.exists());
    assert!(same_name.exists());
    assert!(untagged.exists());
    assert!(!old.exists());
    Ok(())
}

#[test]
fn verify_removes_corrupt_blobs_and_broken_entries() -> TestResult {
    let (_dir, store) = store()?;
    let k = key("generate");
    let image = compute(&store, "item", &k, b"image")?.outputs["image"];
    let other = store.put_bytes(b"other")?;
    assert_eq!(
        store.verify()?,
        VerifyReport {
            blobs_checked: 2,
            ..VerifyReport::default()
        }
    );

    rewrite(&store.blob_path(&image), |bytes| bytes[1] ^= 1)?;
    let report = store.verify()?;
    assert_eq!(report.blobs_checked, 2);
    assert_eq!(report.corrupt, vec![image]);
    assert_eq!(
        report.broken_actions,
        vec![store.keyed_path("actions", &k.stage, &k.digest())]
    );
    assert_eq!(store.check_blob(&other)?, BlobState::Ok);
    assert_eq!(store.stats()?.actions.len(), 0);
    Ok(())
}

#[test]
fn gc_keeps_referenced_entries_and_blobs() -> TestResult {
    let (_dir, store) = store()?;
    let kept = key("generate");
    let mut dropped = kept.clone();
    dropped.params.insert("seed".into(), json!(99));
    let shared = store.put_bytes(b"shared")?;
    let kept_image = store.put_bytes(b"kept")?;
    let dropped_image = store.put_bytes(b"dropped")?;
    let orphan = store.put_bytes(b"orphan")?;
    let outputs =
        |image| BTreeMap::from([("image".to_owned(), image), ("shared".to_owned(), shared)]);
    store.record("a", &kept, outputs(kept_image), json!({}))?;
    store.record("b", &dropped, outputs(dropped_image), json!({}))?;
    store.record_failure("c", &key("other"), "boom")?;
    let keep = BTreeSet::from([kept.digest()]);

    let young = GcPolicy {
        keep_younger_than: Some(3600),
        ..GcPolicy::default()
    };
    let report = store.gc(&keep, &young)?;
    assert_eq!(
        (
            report.removed_actions,
            report.removed_blobs,
            report.kept_actions,
            report.kept_blobs
        ),
        (0, 0, 2, 4)
    );

    let dry = GcPolicy {
        dry_run: true,
        ..GcPolicy::default()
    };
    let report = store.gc(&keep, &dry)?;
    assert_eq!(
        (
            report.removed_actions,
            report.removed_blobs,
            report.kept_actions,
            report.kept_blobs
        ),
        (1, 2, 1, 2)
    );
    assert!(report.freed_bytes > 13);
    assert_eq!(store.stats()?.blobs, 4);
    assert!(store.entry(&dropped)?.is_some());

    let limited = GcPolicy {
        max_bytes: Some(u64::MAX),
        ..GcPolicy::default()
    };
    assert_eq!(store.gc(&keep, &limited)?.removed_blobs, 0);

    let report = store.gc(&keep, &GcPolicy::default())?;
    assert_eq!((report.removed_actions, report.removed_blobs), (1, 2));
    assert!(matches!(store.lookup("a", &kept)?, Lookup::Hit(_)));
    assert!(store.entry(&dropped)?.is_none());
    for (digest, state) in [
        (shared, BlobState::Ok),
        (kept_image, BlobState::Ok),
        (dropped_image, BlobState::Missing),
        (orphan, BlobState::Missing),
    ] {
        assert_eq!(store.check_blob(&digest)?, state, "{digest}");
    }
    assert_eq!(store.stats()?.failures, 0);
    Ok(())
}

#[test]
fn gc_removes_abandoned_locks() -> TestResult {
    let (_dir, store) = store()?;
    let key = Digest::of_bytes(b"key");
    let holder = json!({"host": hostname(), "pid": dead_pid()?, "nonce": "n", "acquired": 0});
    fs::write(store.lock_path(&key), holder.to_string())?;
    let live = store.try_lock(&Digest::of_bytes(b"live"))?;
    store.gc(&BTreeSet::new(), &GcPolicy::default())?;
    assert!(!store.lock_path(&key).exists());
    assert_eq!(store.stats()?.locks, 1);
    drop(live);
    Ok(())
}
