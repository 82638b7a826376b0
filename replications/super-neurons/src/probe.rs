//! `FirstTokenProbe`: what this replication needs beyond `sinkrep_analysis::SinkProbe`,
//! reduced on the fly: the first token's residual stream before and after each FFN
//! (norm and variance across channels, against the other positions), and how often the
//! watched FFN channels fire at positions other than 0.

use sinkrep_model::{Probe, Site};
use tch::{Kind, Tensor};

fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
}

/// Sums over sequences of per-sequence statistics of one residual-stream site.
/// "rest" statistics are first averaged over positions 1..T of the sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResidStats {
    pub n_seqs: f64,
    pub norm_first: f64,
    pub norm_rest: f64,
    /// Population variance across the D channels of one position's vector.
    pub var_first: f64,
    pub var_rest: f64,
    pub max_abs_first: f64,
    pub max_abs_rest: f64,
}

impl ResidStats {
    /// x: (B, T, D).
    fn add(&mut self, x: &Tensor) {
        let t = x.size()[1];
        let x = x.to_kind(Kind::Double);
        let norms = x.norm_scalaropt_dim(2, [-1], false); // (B, T)
        let vars = x.var_correction(-1, 0, false); // (B, T)
        let maxs = x.abs().amax([-1], false); // (B, T)
        self.n_seqs += x.size()[0] as f64;
        self.norm_first += scalar(&norms.select(1, 0));
        self.var_first += scalar(&vars.select(1, 0));
        self.max_abs_first += scalar(&maxs.select(1, 0));
        if t > 1 {
            let rest =
                |v: &Tensor| scalar(&v.narrow(1, 1, t - 1).mean_dim(-1, false, Kind::Double));
            self.norm_rest += rest(&norms);
            self.var_rest += rest(&vars);
            self.max_abs_rest += rest(&maxs);
        }
    }

    /// The means over sequences: (norm, var, max-abs) at position 0 and at the others.
    pub fn means(&self) -> ResidMeans {
        let n = self.n_seqs.max(1.0);
        ResidMeans {
            norm_first: self.norm_first / n,
            norm_rest: self.norm_rest / n,
            var_first: self.var_first / n,
            var_rest: self.var_rest / n,
            max_abs_first: self.max_abs_first / n,
            max_abs_rest: self.max_abs_rest / n,
        }
    }
}

/// Means over sequences of [`ResidStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidMeans {
    pub norm_first: f64,
    pub norm_rest: f64,
    pub var_first: f64,
    pub var_rest: f64,
    pub max_abs_first: f64,
    pub max_abs_rest: f64,
}

/// How one watched FFN channel behaves away from position 0.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchStats {
    pub layer: usize,
    pub channel: usize,
    pub sum_abs_first: f64,
    pub n_first: f64,
    pub sum_abs_rest: f64,
    pub n_rest: f64,
    /// Positions 1..T where |activation| exceeded the firing bar.
    pub n_fire_rest: f64,
    pub max_abs_rest: f64,
    /// The last position (> 0) where the channel fired in any sequence; 0 if none.
    pub last_fire_pos: usize,
}

impl WatchStats {
    pub fn mean_abs_first(&self) -> f64 {
        self.sum_abs_first / self.n_first.max(1.0)
    }
    pub fn mean_abs_rest(&self) -> f64 {
        self.sum_abs_rest / self.n_rest.max(1.0)
    }
    pub fn fire_rate_rest(&self) -> f64 {
        if self.n_rest == 0.0 {
            f64::NAN
        } else {
            self.n_fire_rest / self.n_rest
        }
    }
}

/// See the module docs. `resid_pre` is kept for layer 0 only (the embeddings).
#[derive(Debug)]
pub struct FirstTokenProbe {
    pub embed: ResidStats,
    pub mid: Vec<ResidStats>,
    pub post: Vec<ResidStats>,
    pub watch: Vec<WatchStats>,
    /// |activation| above which a watched channel counts as firing.
    pub fire_abs: f64,
}

impl FirstTokenProbe {
    pub fn new(n_layers: usize, watch: &[(usize, usize)], fire_abs: f64) -> Self {
        FirstTokenProbe {
            embed: ResidStats::default(),
            mid: vec![ResidStats::default(); n_layers],
            post: vec![ResidStats::default(); n_layers],
            watch: watch
                .iter()
                .map(|&(layer, channel)| WatchStats {
                    layer,
                    channel,
                    sum_abs_first: 0.0,
                    n_first: 0.0,
                    sum_abs_rest: 0.0,
                    n_rest: 0.0,
                    n_fire_rest: 0.0,
                    max_abs_rest: 0.0,
                    last_fire_pos: 0,
                })
                .collect(),
            fire_abs,
        }
    }

    fn mlp(&mut self, layer: usize, m: &Tensor) {
        let t = m.size()[1];
        let fire = self.fire_abs;
        for w in self.watch.iter_mut().filter(|w| w.layer == layer) {
            let col = m.select(2, w.channel as i64).abs().to_kind(Kind::Double); // (B, T)
            w.sum_abs_first += scalar(&col.select(1, 0));
            w.n_first += col.size()[0] as f64;
            if t > 1 {
                let rest = col.narrow(1, 1, t - 1);
                w.sum_abs_rest += scalar(&rest);
                w.n_rest += rest.numel() as f64;
                let fires = rest.gt(fire); // (B, T-1)
                w.n_fire_rest += scalar(&fires.to_kind(Kind::Double));
                w.max_abs_rest = w.max_abs_rest.max(rest.max().double_value(&[]));
                let at = fires.any_dim(0, false).nonzero(); // (n, 1): offsets into 1..T
                if at.numel() > 0 {
                    let last = at.max().int64_value(&[]) as usize + 1;
                    w.last_fire_pos = w.last_fire_pos.max(last);
                }
            }
        }
    }
}

impl Probe for FirstTokenProbe {
    fn wants(&self, layer: usize, site: Site) -> bool {
        layer < self.mid.len()
            && match site {
                Site::ResidPre => layer == 0,
                Site::ResidMid | Site::ResidPost => true,
                Site::MlpPost => self.watch.iter().any(|w| w.layer == layer),
                _ => false,
            }
    }

    fn observe(&mut self, layer: usize, site: Site, t: &Tensor) {
        match site {
            Site::ResidPre => self.embed.add(t),
            Site::ResidMid => self.mid[layer].add(t),
            Site::ResidPost => self.post[layer].add(t),
            Site::MlpPost => self.mlp(layer, t),
            _ => {}
        }
    }
}

/// Shows `inner` only the `sites` listed: the held-out evaluations need a few of
/// `SinkProbe`'s reductions, and the others (notably the median of the whole FFN
/// intermediate per layer) cost as much as the forward pass itself.
pub struct OnlySites<'a, P: Probe> {
    pub inner: &'a mut P,
    pub sites: &'a [Site],
}

impl<P: Probe> Probe for OnlySites<'_, P> {
    fn wants(&self, layer: usize, site: Site) -> bool {
        self.sites.contains(&site) && self.inner.wants(layer, site)
    }
    fn observe(&mut self, layer: usize, site: Site, t: &Tensor) {
        self.inner.observe(layer, site, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reductions against values worked out by hand on a (1, 2, 2) tensor.
    #[test]
    fn resid_stats_known_values() {
        let x = Tensor::from_slice(&[3.0f32, -4.0, 1.0, 1.0]).reshape([1, 2, 2]);
        let mut s = ResidStats::default();
        s.add(&x);
        let m = s.means();
        assert!((m.norm_first - 5.0).abs() < 1e-9);
        assert!((m.norm_rest - 2f64.sqrt()).abs() < 1e-9);
        // mean -0.5, deviations 3.5 and -3.5: population variance 12.25
        assert!((m.var_first - 12.25).abs() < 1e-9);
        assert_eq!(m.var_rest, 0.0);
        assert_eq!(m.max_abs_first, 4.0);
        assert_eq!(m.max_abs_rest, 1.0);
    }

    #[test]
    fn watch_counts_firing_elsewhere_only() {
        // (B=1, T=3, F=2): channel 1 is 500 at position 0, 150 and 50 elsewhere.
        let m = Tensor::from_slice(&[0.0f32, 500.0, 0.0, -150.0, 0.0, 50.0]).reshape([1, 3, 2]);
        let mut p = FirstTokenProbe::new(1, &[(0, 1)], 100.0);
        p.observe(0, Site::MlpPost, &m);
        let w = &p.watch[0];
        assert_eq!(w.mean_abs_first(), 500.0);
        assert_eq!(w.mean_abs_rest(), 100.0);
        assert_eq!(w.fire_rate_rest(), 0.5);
        assert_eq!(w.max_abs_rest, 150.0);
        assert_eq!(w.last_fire_pos, 1);
    }
}
