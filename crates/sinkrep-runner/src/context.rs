//! What a replication's `run` sees: its scale, seed and output folder, and the only ways
//! it writes outputs (so each one is atomic, deterministic and recorded in the manifest).

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sinkrep_stats::MeanInterval;
use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use crate::claim::Scale;
use crate::csv_out::{encode_cells, encode_rows, Cell};
use crate::error::{io_err, Error, Result};
use crate::files::cached_file_record;
use crate::json::{canonical_json, json_bytes};
use crate::manifest::{FileRecord, StageTiming, MANIFEST, METRICS, VERDICTS};

/// The run of one replication at one scale.
pub struct RunContext {
    id: String,
    scale: Scale,
    seed: u64,
    seeds: Vec<u64>,
    device: String,
    out_dir: PathBuf,
    show_progress: bool,
    jobs: usize,
    /// While [`RunContext::per_seed`] runs one seed: the metrics it records.
    capture: Option<BTreeMap<String, f64>>,
    /// While [`RunContext::for_model`] runs a non-primary model: its name, which
    /// prefixes metric names, config keys and stage names (`m.`) and artifact paths (`m/`).
    scope: Option<String>,
    pub(crate) config: BTreeMap<String, serde_json::Value>,
    pub(crate) stages: Vec<StageTiming>,
    pub(crate) inputs: BTreeMap<String, FileRecord>,
    pub(crate) artifacts: BTreeMap<String, FileRecord>,
    pub(crate) metrics: BTreeMap<String, f64>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("id", &self.id)
            .field("scale", &self.scale)
            .field("seed", &self.seed)
            .field("out_dir", &self.out_dir)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    pub(crate) fn new(
        id: &str,
        scale: Scale,
        seed: u64,
        device: &str,
        out_dir: PathBuf,
        show_progress: bool,
    ) -> RunContext {
        RunContext {
            id: id.to_string(),
            scale,
            seed,
            seeds: Vec::new(),
            device: device.to_string(),
            out_dir,
            show_progress,
            jobs: 1,
            capture: None,
            scope: None,
            config: BTreeMap::new(),
            stages: Vec::new(),
            inputs: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            metrics: BTreeMap::new(),
        }
    }

    pub(crate) fn with_jobs(mut self, jobs: usize) -> RunContext {
        self.jobs = jobs;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many independent single-threaded jobs may run at once (`--threads`, else the
    /// number of cores). Results never depend on it.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// A folder shared by every replication of this invocation at this scale
    /// (`<out>/<scale>/.shared`), for models trained once and reused; emptied when the
    /// invocation starts.
    pub fn shared_dir(&self) -> PathBuf {
        self.out_dir.parent().map_or_else(
            || self.out_dir.join(crate::runner::SHARED_DIR),
            |p| p.join(crate::runner::SHARED_DIR),
        )
    }
    pub fn scale(&self) -> Scale {
        self.scale
    }
    /// The run's base seed (`--seed`).
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// `n` seeds for repeated measurements: `seed, seed+1, ..., seed+n-1`, recorded in the
    /// manifest.
    pub fn seeds(&mut self, n: usize) -> Vec<u64> {
        let s: Vec<u64> = (0..n as u64).map(|i| self.seed.wrapping_add(i)).collect();
        for x in &s {
            if !self.seeds.contains(x) {
                self.seeds.push(*x);
            }
        }
        s
    }
    pub(crate) fn recorded_seeds(&self) -> &[u64] {
        &self.seeds
    }
    /// The device the binary resolved (`cpu`, `cuda:0`, ...); the runner does not
    /// interpret it.
    pub fn device_name(&self) -> &str {
        &self.device
    }
    /// `<out>/<scale>/<id>`; exists and is empty when `run` starts.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Runs `f` for pretrained model `model` of a claim's `models` (primary first).
    /// For the primary model nothing changes; for another one, everything `f` records
    /// is that model's: metric names and config keys get the prefix `model.`, stage
    /// names `model: `, and artifacts land under `model/` (so a section written once
    /// writes each model's tables and metrics side by side, as
    /// [`crate::claim::model_metric`] names them).
    pub fn for_model<T>(
        &mut self,
        models: &[String],
        model: &str,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let primary = crate::claim::is_primary_model(models, model);
        let prev = std::mem::replace(&mut self.scope, (!primary).then(|| model.to_string()));
        let out = f(self);
        self.scope = prev;
        out
    }

    /// The model [`RunContext::for_model`] scoped this context to (`None`: the primary
    /// model, or no model).
    pub fn model_scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// `name` inside the current model scope, joined with `sep`.
    fn scoped(&self, name: &str, sep: &str) -> String {
        match &self.scope {
            Some(m) => format!("{m}{sep}{name}"),
            None => name.to_string(),
        }
    }

    /// Records one resolved configuration value (model, sequence length, batch, ...).
    /// Setting a key twice to different values is an error.
    pub fn config(&mut self, key: &str, value: impl Serialize) -> Result<()> {
        let key = &self.scoped(key, ".");
        let v = serde_json::to_value(value).map_err(|e| Error::Config {
            key: key.to_string(),
            why: e.to_string(),
        })?;
        let v = canonical_json(v);
        match self.config.get(key) {
            Some(old) if *old != v => Err(Error::Config {
                key: key.to_string(),
                why: format!("already set to {old}, now {v}"),
            }),
            _ => {
                self.config.insert(key.to_string(), v);
                Ok(())
            }
        }
    }

    /// Runs `f`, recording its wall time under `name` in the manifest (also when `f`
    /// returns an error). `f` gets the context back so it can write outputs.
    pub fn stage<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let name = &self.scoped(name, ": ");
        let t0 = Instant::now();
        let out = f(self);
        self.stages.push(StageTiming {
            name: name.to_string(),
            seconds: t0.elapsed().as_secs_f64(),
        });
        out
    }

    /// Registers an input file (sha256 and size go into the manifest) and returns its
    /// record. Hashes are cached within the process by (path, size, mtime).
    pub fn input(&mut self, path: impl AsRef<Path>) -> Result<FileRecord> {
        let path = path.as_ref();
        let rec = cached_file_record(path)?;
        self.inputs.insert(path.display().to_string(), rec.clone());
        Ok(rec)
    }

    /// Checks an artifact name: a relative path of plain components, not a reserved
    /// runner file. Returns its full path.
    fn artifact_target(&self, name: &str) -> Result<PathBuf> {
        let bad = |why| {
            Err(Error::ArtifactName {
                name: name.to_string(),
                why,
            })
        };
        let p = Path::new(name);
        if name.is_empty() || name.contains('\\') {
            return bad("must be a non-empty relative path with `/` separators");
        }
        // Checked on the text: `Path::components` silently drops inner `.` parts.
        if name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
            || !p.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return bad("must be relative, without empty, `.` or `..` parts");
        }
        if [MANIFEST, METRICS, VERDICTS].contains(&name) {
            return bad("is written by the runner itself");
        }
        if p.file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with('.'))
        {
            return bad("must not start with `.` (temporary files do)");
        }
        Ok(self.out_dir.join(p))
    }

    /// The path an artifact `name` would have, for code that must write a file itself
    /// (then call [`RunContext::register_file`]). Prefer the `write_*` methods.
    pub fn artifact_path(&self, name: &str) -> Result<PathBuf> {
        let name = &self.scoped(name, "/");
        let p = self.artifact_target(name)?;
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(p)
    }

    /// Registers a file already written (atomically!) under the run folder as an artifact.
    pub fn register_file(&mut self, name: &str) -> Result<FileRecord> {
        let name = &self.scoped(name, "/");
        let path = self.artifact_target(name)?;
        let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        let rec = FileRecord {
            sha256: sinkrep_inputs::sha256_file(&path)?,
            size,
        };
        self.artifacts.insert(name.to_string(), rec.clone());
        Ok(rec)
    }

    pub(crate) fn write_artifact_unchecked(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.out_dir.join(name);
        sinkrep_inputs::write_atomic(&path, bytes)?;
        self.artifacts.insert(
            name.to_string(),
            FileRecord {
                sha256: sinkrep_inputs::sha256_bytes(bytes),
                size: bytes.len() as u64,
            },
        );
        Ok(path)
    }

    /// Writes bytes as artifact `name` (atomically) and records it.
    pub fn write_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let name = &self.scoped(name, "/");
        self.artifact_target(name)?;
        self.write_artifact_unchecked(name, bytes)
    }

    pub fn write_text(&mut self, name: &str, text: &str) -> Result<PathBuf> {
        self.write_bytes(name, text.as_bytes())
    }

    /// Writes a value as pretty JSON with sorted keys (non-finite floats become `null`).
    pub fn write_json(&mut self, name: &str, value: &impl Serialize) -> Result<PathBuf> {
        let bytes = json_bytes(value, name)?;
        self.write_bytes(name, &bytes)
    }

    /// Writes a CSV table of rows of a flat `#[derive(Serialize)]` struct; the header
    /// is its field names. The way to write a table whose columns are known at compile
    /// time (see [`crate::csv_out`] for the formatting).
    pub fn write_rows<T, R>(&mut self, name: &str, rows: R) -> Result<PathBuf>
    where
        T: Serialize + Default,
        R: IntoIterator<Item = T>,
    {
        let name = &self.scoped(name, "/");
        let target = self.artifact_target(name)?;
        let bytes = encode_rows(rows).map_err(|msg| Error::Csv { path: target, msg })?;
        self.write_artifact_unchecked(name, &bytes)
    }

    /// Writes a CSV table whose columns are only known at run time (one per layer, say):
    /// `header`, then one record per row; every row must have as many cells as the
    /// header. Rows may be `Vec<f64>`, `[f64; N]` or `Vec<Cell>` for mixed columns
    /// (`vec![Cell::from(layer), Cell::from(value)]`). Fixed columns: [`Self::write_rows`].
    pub fn write_csv<R, C>(&mut self, name: &str, header: &[&str], rows: R) -> Result<PathBuf>
    where
        R: IntoIterator,
        R::Item: IntoIterator<Item = C>,
        C: Into<Cell>,
    {
        let name = &self.scoped(name, "/");
        let target = self.artifact_target(name)?;
        let bytes = encode_cells(header, rows).map_err(|msg| Error::Csv { path: target, msg })?;
        self.write_artifact_unchecked(name, &bytes)
    }

    /// Records a metric for `metrics.json` and the checks. A non-finite value is kept
    /// (written as `null`) and makes any check on it "does not hold". Recording the same
    /// name twice is an error.
    pub fn metric(&mut self, name: &str, value: f64) -> Result<()> {
        let name = &self.scoped(name, ".");
        self.record_metric(name, value)
    }

    fn record_metric(&mut self, name: &str, value: f64) -> Result<()> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Metric {
                name: name.to_string(),
                why: "must be a non-empty name without spaces".into(),
            });
        }
        let target = self.capture.as_mut().unwrap_or(&mut self.metrics);
        if target.contains_key(name) {
            return Err(Error::Metric {
                name: name.to_string(),
                why: "recorded twice".into(),
            });
        }
        target.insert(name.to_string(), value);
        Ok(())
    }

    /// Runs `f` once per seed (with the seed's index) and records every metric it
    /// records as a repeated measurement over the seeds ([`RunContext::metric_samples`]):
    /// for a measurement taken of several independently trained models. Every seed must
    /// record the same metric names; `f` must not call `metric_samples` itself.
    pub fn per_seed<E>(
        &mut self,
        seeds: &[u64],
        mut f: impl FnMut(&mut Self, usize) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E>
    where
        E: From<Error>,
    {
        let mut runs: Vec<BTreeMap<String, f64>> = Vec::with_capacity(seeds.len());
        for (i, seed) in seeds.iter().enumerate() {
            if self.capture.is_some() {
                return Err(Error::Metric {
                    name: "per_seed".into(),
                    why: "nested per-seed measurements".into(),
                }
                .into());
            }
            self.capture = Some(BTreeMap::new());
            let r = f(self, i);
            let got = self.capture.take().unwrap_or_default();
            r?;
            if let Some(first) = runs.first() {
                if !first.keys().eq(got.keys()) {
                    return Err(Error::Metric {
                        name: format!("seed {seed}"),
                        why: "recorded other metric names than the first seed".into(),
                    }
                    .into());
                }
            }
            runs.push(got);
        }
        let Some(first) = runs.first() else {
            return Ok(());
        };
        let names: Vec<String> = first.keys().cloned().collect();
        for name in names {
            let samples: Vec<(u64, f64)> = seeds
                .iter()
                .zip(&runs)
                .map(|(&s, m)| (s, m[&name]))
                .collect();
            // Captured names are already scoped.
            self.record_samples(&name, &samples)?;
        }
        Ok(())
    }

    /// Records a repeated measurement, one value per seed: `<name>` (the mean),
    /// `<name>.sd` (sample standard deviation), `<name>.ci95_lo` / `<name>.ci95_hi`
    /// (Student-t 95% interval of the mean), `<name>.n`, and `<name>.seed<S>` per seed.
    /// With one sample the spread is unknown and recorded as `null`.
    pub fn metric_samples(&mut self, name: &str, samples: &[(u64, f64)]) -> Result<()> {
        let name = &self.scoped(name, ".");
        self.record_samples(name, samples)
    }

    fn record_samples(&mut self, name: &str, samples: &[(u64, f64)]) -> Result<()> {
        if samples.is_empty() {
            return Err(Error::Metric {
                name: name.to_string(),
                why: "no samples".into(),
            });
        }
        let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let ci = MeanInterval::of(&values);
        self.record_metric(name, ci.mean)?;
        self.record_metric(&format!("{name}.sd"), ci.sd)?;
        self.record_metric(&format!("{name}.ci95_lo"), ci.lo())?;
        self.record_metric(&format!("{name}.ci95_hi"), ci.hi())?;
        self.record_metric(&format!("{name}.n"), ci.n as f64)?;
        for (seed, v) in samples {
            self.record_metric(&format!("{name}.seed{seed}"), *v)?;
        }
        Ok(())
    }

    /// The metrics recorded so far.
    pub fn metrics(&self) -> &BTreeMap<String, f64> {
        &self.metrics
    }

    /// A progress bar on stderr, hidden when stderr is not a terminal (or the binary
    /// asked for no progress).
    pub fn progress(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.show_progress || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(format!("{}: {msg}", self.id));
        pb
    }
}
