//! Checkpoints: one folder per saved step, written atomically.
//!
//! ```text
//! <run>/checkpoints/step-0000500/
//!     model.safetensors   weights, named as in GGUF (`blk.0.attn_q.weight`, ...)
//!     optim.safetensors   AdamW moments (`adamw.m.<var>`, `adamw.v.<var>`)
//!     state.json          step, config, data fingerprint, logs so far, file sha256s
//! ```
//!
//! The folder is assembled under a temporary name and renamed into place, so a folder
//! named `step-*` is always complete; `state.json` records the sha256 of both tensor
//! files, checked on load. The sampler needs no saved state: batch `s` is a function of
//! (seed, s), so the step is the sampler position. safetensors keeps the files readable
//! from Python (`safetensors.torch.load_file`).

use crate::config::TrainConfig;
use crate::optim::AdamW;
use crate::train::{StepRecord, ValRecord};
use crate::{io_err, Result, TrainError};
use serde::{Deserialize, Serialize};
use sinkrep_model::Model;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Version of the checkpoint layout; bumped on any incompatible change.
pub const FORMAT: u32 = 1;
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIM_FILE: &str = "optim.safetensors";
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Optimizer updates done; training continues with step `step + 1`.
    pub step: usize,
    /// AdamW's update count `t` (equal to `step`).
    pub optimizer_t: u64,
    pub config: TrainConfig,
    /// `TokenData::fingerprint` of the data trained on.
    pub data_fingerprint: String,
    /// sha256 of the BPE tokenizer artifact, if any.
    pub tokenizer_sha256: Option<String>,
    pub train_log: Vec<StepRecord>,
    pub val_log: Vec<ValRecord>,
    /// Wall-clock seconds of training up to here (informative, not reproducible).
    pub elapsed_s: f64,
    /// libtorch intra-op threads of the session that wrote this checkpoint.
    pub torch_threads: usize,
    /// sha256 of each tensor file in the folder.
    pub files: BTreeMap<String, String>,
}

/// A complete checkpoint folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub step: usize,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

impl Checkpoint {
    /// Complete checkpoints of a run, oldest first.
    pub fn list(run_dir: &Path) -> Result<Vec<Checkpoint>> {
        let dir = checkpoints_dir(run_dir);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse().ok());
            if let (Some(step), true) = (step, path.is_dir()) {
                out.push(Checkpoint { dir: path, step });
            }
        }
        out.sort_by_key(|c| c.step);
        Ok(out)
    }

    pub fn latest(run_dir: &Path) -> Result<Option<Checkpoint>> {
        Ok(Checkpoint::list(run_dir)?.pop())
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// Reads `state.json` and checks both tensor files against their recorded sha256.
    pub fn read_state(&self) -> Result<CheckpointState> {
        let path = self.dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| TrainError::BadFile {
                path: path.clone(),
                msg: format!("invalid checkpoint state: {e}"),
            })?;
        if state.format != FORMAT || state.step != self.step {
            return Err(TrainError::BadFile {
                path,
                msg: format!(
                    "checkpoint format {} step {} (expected format {FORMAT}, step {})",
                    state.format, state.step, self.step
                ),
            });
        }
        for name in [MODEL_FILE, OPTIM_FILE] {
            let file = self.dir.join(name);
            let actual = sinkrep_inputs::sha256_file(&file)?;
            match state.files.get(name) {
                Some(expected) if *expected == actual => {}
                expected => {
                    return Err(TrainError::BadFile {
                        path: file,
                        msg: format!(
                            "corrupt checkpoint file: sha256 {actual}, state.json records {}; \
                             delete this checkpoint folder to resume from an earlier one",
                            expected.map_or("nothing", String::as_str)
                        ),
                    })
                }
            }
        }
        Ok(state)
    }
}

fn sync_path(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<String> {
    let cpu: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&cpu, path)?;
    sync_path(path)?;
    Ok(sinkrep_inputs::sha256_file(path)?)
}

/// The model's variables, sorted by name.
pub fn named_weights(model: &Model) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes a checkpoint of `model` and `opt` at `state.step` (filling `state.files`).
pub(crate) fn save(
    run_dir: &Path,
    model: &Model,
    opt: &AdamW,
    mut state: CheckpointState,
) -> Result<Checkpoint> {
    let ckdir = checkpoints_dir(run_dir);
    let name = format!("step-{:07}", state.step);
    let tmp = ckdir.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let sha_model = write_tensors(&tmp.join(MODEL_FILE), &named_weights(model))?;
    let sha_optim = write_tensors(&tmp.join(OPTIM_FILE), &opt.state_tensors())?;
    state.files = BTreeMap::from([
        (MODEL_FILE.to_string(), sha_model),
        (OPTIM_FILE.to_string(), sha_optim),
    ]);
    let json = serde_json::to_vec_pretty(&state).map_err(|e| TrainError::Data(e.to_string()))?;
    sinkrep_inputs::write_atomic(&tmp.join(STATE_FILE), &json)?;
    let dest = ckdir.join(&name);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
    }
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    sync_path(&ckdir)?;
    Ok(Checkpoint {
        dir: dest,
        step: state.step,
    })
}

/// Removes leftovers of checkpoints interrupted while being written.
pub(crate) fn remove_partial(run_dir: &Path) -> Result<()> {
    let ckdir = checkpoints_dir(run_dir);
    if !ckdir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(&ckdir).map_err(io_err(&ckdir))? {
        let path = entry.map_err(io_err(&ckdir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp-"))
        {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

pub(crate) fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path)?.into_iter().collect())
}

/// Copies tensors named like the model's variables into them (exact, any device).
pub(crate) fn load_weights(model: &Model, path: &Path) -> Result<()> {
    let mut tensors = read_tensors(path)?;
    for (name, mut var) in named_weights(model) {
        let src = tensors.remove(&name).ok_or_else(|| TrainError::BadFile {
            path: path.to_path_buf(),
            msg: format!("missing weight `{name}`"),
        })?;
        if src.size() != var.size() || src.kind() != var.kind() {
            return Err(TrainError::BadFile {
                path: path.to_path_buf(),
                msg: format!(
                    "weight `{name}` is {:?} {:?}, the model wants {:?} {:?}",
                    src.size(),
                    src.kind(),
                    var.size(),
                    var.kind()
                ),
            });
        }
        tch::no_grad(|| var.f_copy_(&src))?;
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(TrainError::BadFile {
            path: path.to_path_buf(),
            msg: format!("weight `{extra}` is not in the model (another variant?)"),
        });
    }
    Ok(())
}

/// Loads the model of a checkpoint folder (verified) onto `device`, for analysis. Its
/// attention runs `AttnImpl::Explicit`, so probes can see patterns.
pub fn load_model(ckpt_dir: &Path, device: Device) -> Result<(Model, CheckpointState)> {
    let step = ckpt_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| TrainError::BadFile {
            path: ckpt_dir.to_path_buf(),
            msg: "not a checkpoint folder (step-NNNNNNN)".into(),
        })?;
    let ckpt = Checkpoint {
        dir: ckpt_dir.to_path_buf(),
        step,
    };
    let state = ckpt.read_state()?;
    let mut cfg = state.config.model.clone();
    cfg.zero_init = true;
    let mut model = Model::new(&cfg, device)?;
    model.config.zero_init = false;
    load_weights(&model, &ckpt.model_path())?;
    Ok((model, state))
}
