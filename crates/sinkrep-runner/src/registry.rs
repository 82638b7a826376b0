//! The replications the suite knows, and the trait each one implements.

use std::path::{Path, PathBuf};

use crate::claim::{Claim, ClaimError};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::figures::FigureStyle;
use crate::table::TextTable;

/// One replication: a claim of the paper, the code that measures it, and its figures.
///
/// A replication crate does not implement this by hand: it implements [`Study`] and
/// calls [`replication!`](crate::replication), which embeds its `claim.toml` and
/// `README.md` and pairs them with the study (see replications/README.md, "Adding a
/// replication").
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

/// What a replication crate writes itself: how to measure its claim and how to draw the
/// result. [`replication!`](crate::replication) pairs it with the crate's claim file and
/// README into a [`Replication`].
pub trait Study: Send + Sync {
    /// Measures the claim at `ctx.scale()`, writing artifacts and metrics through `ctx`.
    /// `claim` is the crate's parsed claim file (its `[scale.*]` tables hold the sizes:
    /// [`Claim::scale_params`]). Return an error only when the measurement itself
    /// failed: a check that does not hold is a result, judged by the runner.
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> anyhow::Result<()>;
    /// Draws the figures into `fig_dir` from the files in `run_dir` alone (CSV/JSON
    /// written by `run`; nothing is recomputed). Returns the files written.
    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>>;
}

/// A [`Study`] with the claim file and README its crate embeds: what
/// [`replication!`](crate::replication) builds.
pub struct Embedded<S> {
    claim: Claim,
    readme: &'static str,
    study: S,
}

impl<S: Study> Embedded<S> {
    /// Parses and validates `claim_toml`; errors name the file as
    /// [`claim_origin`]`(manifest_dir)` does.
    pub fn new(
        claim_toml: &str,
        readme: &'static str,
        manifest_dir: &str,
        study: S,
    ) -> std::result::Result<Embedded<S>, ClaimError> {
        Ok(Embedded {
            claim: Claim::parse(claim_toml, &claim_origin(manifest_dir))?,
            readme,
            study,
        })
    }
}

impl<S: Study> Replication for Embedded<S> {
    fn claim(&self) -> &Claim {
        &self.claim
    }

    fn readme(&self) -> &str {
        self.readme
    }

    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        self.study.run(&self.claim, ctx)
    }

    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>> {
        self.study.figures(run_dir, fig_dir, style)
    }
}

/// How errors name a crate's claim file: `<parent folder>/<crate folder>/claim.toml`
/// from the crate's `CARGO_MANIFEST_DIR` (e.g. `replications/arbitrary-sinks/claim.toml`),
/// the same on every machine whatever the checkout's location.
pub fn claim_origin(manifest_dir: &str) -> String {
    let mut parts: Vec<String> = Path::new(manifest_dir)
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.reverse();
    parts.push("claim.toml".into());
    parts.join("/")
}

/// Declares a replication crate's entry points from a value implementing [`Study`]:
///
/// - `pub fn replication() -> Result<Box<dyn Replication>, ClaimError>`, for the
///   registry (`src/runner_cmd.rs`): the crate's `claim.toml` and `README.md`, embedded
///   at build time from `CARGO_MANIFEST_DIR`, with the claim parsed and validated;
/// - `pub fn claim() -> Result<Claim, ClaimError>`: the same claim on its own (for the
///   crate's sizes per scale, [`Claim::scale_params`], and its tests).
///
/// ```ignore
/// pub struct MyClaim;
/// impl sinkrep_runner::Study for MyClaim { /* run, figures */ }
/// sinkrep_runner::replication!(MyClaim);
/// ```
#[macro_export]
macro_rules! replication {
    ($study:expr) => {
        const __SINKREP_CLAIM: &str =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/claim.toml"));

        /// This replication, for the `sinkrep` registry: `claim.toml` and `README.md`
        /// embedded at build time, the claim parsed and validated.
        pub fn replication(
        ) -> ::std::result::Result<::std::boxed::Box<dyn $crate::Replication>, $crate::ClaimError> {
            Ok(::std::boxed::Box::new($crate::Embedded::new(
                __SINKREP_CLAIM,
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")),
                env!("CARGO_MANIFEST_DIR"),
                $study,
            )?))
        }

        /// This replication's claim file (embedded at build time), parsed and validated.
        pub fn claim() -> ::std::result::Result<$crate::Claim, $crate::ClaimError> {
            $crate::Claim::parse(
                __SINKREP_CLAIM,
                &$crate::claim_origin(env!("CARGO_MANIFEST_DIR")),
            )
        }
    };
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
