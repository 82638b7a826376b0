//! AdamW with explicit moment tensors, the learning-rate schedule, and gradient clipping.
//!
//! tch's `nn::Optimizer` keeps AdamW's moments inside libtorch and cannot export them, so
//! a resumed run could not continue exactly. This AdamW is written out over the
//! VarStore's variables and keeps `m` and `v` as ordinary tensors that checkpoints save.
//! The update is PyTorch's `torch.optim.AdamW` (single-tensor path, amsgrad off):
//!
//! ```text
//! p <- p * (1 - lr * wd)                       (decoupled weight decay)
//! m <- lerp(m, g, 1 - beta1)
//! v <- beta2 * v + (1 - beta2) * g^2
//! p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! Weight decay applies to the matrices (linear weights and the token embedding) and not
//! to normalisation gains: any variable whose name ends in `norm.weight`, which includes
//! the head-wise RMSNorm gain even when it is (H, Dh). With `decay_gains` every
//! variable decays, gains included (what `torch.optim.AdamW(model.parameters())` does).

use crate::{Result, TrainError};
use std::collections::HashMap;
use tch::{nn::VarStore, Kind, Tensor};

/// Linear warm-up to `lr` over `warmup` steps, then cosine decay to `min_lr` at `steps`
/// (nanoGPT's schedule). Steps count from 1: step `s` is the `s`-th optimizer update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub steps: usize,
}

impl LrSchedule {
    pub fn at(&self, step: usize) -> f64 {
        if step <= self.warmup {
            return self.lr * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cos
    }
}

struct Param {
    name: String,
    var: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates done (`t` in the bias corrections).
    pub t: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("params", &self.params.len())
            .field("t", &self.t)
            .finish()
    }
}

/// Does AdamW decay this variable? Matrices yes, normalisation gains no.
pub fn decays(name: &str, var: &Tensor) -> bool {
    var.dim() >= 2 && !name.ends_with("norm.weight")
}

impl AdamW {
    /// Zero moments for every trainable variable of `vs`, in name order.
    pub fn new(
        vs: &VarStore,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decay_gains: bool,
    ) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| Param {
                decay: decay_gains || decays(&name, &var),
                m: var.zeros_like(),
                v: var.zeros_like(),
                name,
                var,
            })
            .collect();
        AdamW {
            params,
            beta1,
            beta2,
            eps,
            weight_decay,
            t: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// Global L2 norm of all gradients (as `torch.nn.utils.clip_grad_norm_` computes it).
    pub fn grad_norm(&self) -> f64 {
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(|g| g.defined())
            .map(|g| g.norm())
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        Tensor::stack(&norms, 0).norm().double_value(&[])
    }

    /// Multiplies every gradient by `factor` (clipping).
    pub fn scale_grads(&mut self, factor: f64) {
        tch::no_grad(|| {
            for p in &self.params {
                let mut g = p.var.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
        });
    }

    /// One AdamW update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bc1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                if p.decay && self.weight_decay != 0.0 {
                    let _ = p.var.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = p.m.lerp_(&g, 1.0 - b1);
                let _ = p.v.g_mul_scalar_(b2);
                let _ = p.v.addcmul_(&(&g * (1.0 - b2)), &g);
                let denom = p.v.sqrt() / bc2_sqrt + self.eps;
                let _ = p.var.addcdiv_(&(&p.m * -step_size), &denom);
            }
        });
    }

    /// Are all parameters finite?
    pub fn params_finite(&self) -> bool {
        self.params
            .iter()
            .all(|p| p.var.isfinite().all().int64_value(&[]) != 0)
    }

    /// The moments as named tensors (`adamw.m.<var>`, `adamw.v.<var>`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            out.push((format!("adamw.m.{}", p.name), p.m.shallow_clone()));
            out.push((format!("adamw.v.{}", p.name), p.v.shallow_clone()));
        }
        out
    }

    /// Restores moments saved by `state_tensors` and the update count `t`.
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for (which, dst) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("adamw.{which}.{}", p.name);
                let src = tensors
                    .remove(&key)
                    .ok_or_else(|| TrainError::Data(format!("optimizer state lacks `{key}`")))?;
                if src.size() != dst.size() || src.kind() != Kind::Float {
                    return Err(TrainError::Data(format!(
                        "optimizer state `{key}`: {:?} {:?}, expected {:?} Float",
                        src.size(),
                        src.kind(),
                        dst.size()
                    )));
                }
                tch::no_grad(|| dst.f_copy_(&src))?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(TrainError::Data(format!(
                "optimizer state has `{extra}`, which the model lacks"
            )));
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = LrSchedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 10,
            steps: 110,
        };
        assert_eq!(s.at(5), 5e-4);
        assert_eq!(s.at(10), 1e-3);
        assert!((s.at(60) - 5.5e-4).abs() < 1e-12);
        assert_eq!(s.at(110), 1e-4);
        assert!(s.at(30) > s.at(31));
    }
}
