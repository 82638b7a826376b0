//! The replications the suite knows, and the trait each one implements.

use std::path::{Path, PathBuf};

use crate::claim::Claim;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::figures::FigureStyle;
use crate::table::TextTable;

/// One replication: a claim of the paper, the code that measures it, and its figures.
///
/// A replication crate embeds its `claim.toml` and `README.md` with `include_str!`, parses
/// the claim with [`Claim::parse`] in its constructor (returning the error, so the
/// binary fails loudly on an unreadable claim), and hands a boxed value to
/// [`Registry::new`].
pub trait Replication: Send + Sync {
    fn claim(&self) -> &Claim;
    /// The crate's README (fixed template; see this crate's README for the sections).
    fn readme(&self) -> &str;
    /// Measures the claim at `ctx.scale()`, writing artifacts and metrics through `ctx`.
    /// Return an error only when the measurement itself failed: a check that does not
    /// hold is a result, judged by the runner from the metrics.
    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()>;
    /// Draws this replication's figures into `fig_dir` from the files in `run_dir` alone
    /// (CSV/JSON written by `run`; nothing is recomputed). Returns the files written.
    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>>;
}

/// Every registered replication, in registration order (the order of `sinkrep list`).
pub struct Registry {
    reps: Vec<Box<dyn Replication>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl Registry {
    /// Fails on a claim that does not validate or on two replications with the same id.
    pub fn new(reps: Vec<Box<dyn Replication>>) -> Result<Registry> {
        for (i, r) in reps.iter().enumerate() {
            let claim = r.claim();
            claim.validate()?;
            if let Some(prev) = reps[..i].iter().find(|p| p.claim().id == claim.id) {
                return Err(Error::DuplicateId {
                    id: claim.id.clone(),
                    first: prev.claim().origin.clone(),
                    second: claim.origin.clone(),
                });
            }
        }
        Ok(Registry { reps })
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Replication> {
        self.reps.iter().map(|r| r.as_ref())
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.reps.iter().map(|r| r.claim().id.as_str())
    }

    pub fn len(&self) -> usize {
        self.reps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reps.is_empty()
    }

    pub fn get(&self, id: &str) -> Result<&dyn Replication> {
        self.iter()
            .find(|r| r.claim().id == id)
            .ok_or_else(|| Error::UnknownReplication {
                id: id.to_string(),
                known: self.known(),
            })
    }

    pub(crate) fn known(&self) -> String {
        if self.reps.is_empty() {
            "(none)".to_string()
        } else {
            self.ids().collect::<Vec<_>>().join(", ")
        }
    }

    /// The table `sinkrep list` prints: id, version, scales, one-line claim.
    pub fn list_table(&self) -> String {
        let mut t = TextTable::new(&["id", "version", "scales", "claim"]);
        for r in self.iter() {
            let c = r.claim();
            t.row(vec![
                c.id.clone(),
                c.version.to_string(),
                c.scales_list(),
                c.claim.clone(),
            ]);
        }
        t.render()
    }
}
