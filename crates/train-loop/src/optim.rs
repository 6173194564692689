//! AdamW over tensors, update for update `torch.optim.AdamW`: ATen's fused kernel
//! (`fused=True`, HF's default `adamw_torch_fused`) or the single-tensor op sequence
//! (`adamw_torch` on CPU), with state (step, exp_avg, exp_avg_sq) that checkpoints as
//! named tensors. Also `clip_grad_norm`, as `torch.nn.utils.clip_grad_norm_`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::adamw_kernel;
use crate::error::{Result, TrainError};

/// HF `TrainingArguments.optim`: which AdamW implementation updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// `torch.optim.AdamW(fused=True)`: one pass over param, grad and state per tensor.
    #[default]
    AdamwTorchFused,
    /// `torch.optim.AdamW(foreach=False)`: the single-tensor op sequence.
    AdamwTorch,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "adamw_torch_fused" => Ok(OptimizerKind::AdamwTorchFused),
            "adamw_torch" => Ok(OptimizerKind::AdamwTorch),
            other => Err(format!(
                "unknown optimizer `{other}`; use adamw_torch_fused or adamw_torch"
            )),
        }
    }
}

/// A named parameter and its weight decay (0 for biases and LayerNorm weights, as HF groups them).
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub kind: OptimizerKind,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            kind: OptimizerKind::default(),
        }
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Param>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Single-tensor path: two flat buffers as large as the largest parameter, so the
    /// update's temporaries are not allocated (and page-faulted in) at every step.
    scratch: [Tensor; 2],
    /// Fused path: the step count as the float32 0-dim tensor the kernel reads
    /// (torch keeps one per parameter; all are equal here, so they share this one).
    step_count: Tensor,
    /// Parameter indices by weight decay: one fused call per HF parameter group.
    groups: Vec<(f64, Vec<usize>)>,
    /// Fused path: the inverse of the factor [`AdamW::clip_grad_norm`] found, for the
    /// next step's kernel to divide the gradients by.
    grad_divisor: Option<Tensor>,
    /// Per parameter, the bf16 copy that carries its gradient and that each update
    /// rewrites ([`AdamW::attach_bf16_copies`]).
    bf16_copies: Vec<Option<Tensor>>,
    /// Per parameter with sparse gradients and no weight decay: per row, false while
    /// its moments are all +0.0 (a word no batch has looked up), so the update can
    /// skip it ([`adamw_kernel::Gradient::SparseRows`]). Found from the moments at the
    /// first sparse step, and again after [`AdamW::load_state`].
    live_rows: Vec<Option<Vec<bool>>>,
    /// Whether the update skips those rows ([`AdamW::set_skip_dormant_rows`]).
    skip_dormant_rows: bool,
    /// Updates done so far.
    pub step: i64,
}

impl AdamW {
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Self {
        let zeros = |p: &Param| p.tensor.zeros_like().detach();
        let device = params
            .first()
            .map_or(tch::Device::Cpu, |p| p.tensor.device());
        let largest = match config.kind {
            OptimizerKind::AdamwTorch => params.iter().map(|p| p.tensor.numel()).max(),
            OptimizerKind::AdamwTorchFused => None,
        };
        let flat = || {
            let kind = params.first().map_or(Kind::Float, |p| p.tensor.kind());
            Tensor::zeros([largest.unwrap_or(0) as i64], (kind, device))
        };
        let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
        for (i, p) in params.iter().enumerate() {
            match groups.iter_mut().find(|(wd, _)| *wd == p.weight_decay) {
                Some((_, members)) => members.push(i),
                None => groups.push((p.weight_decay, vec![i])),
            }
        }
        AdamW {
            scratch: [flat(), flat()],
            step_count: Tensor::zeros([], (Kind::Float, device)),
            groups,
            grad_divisor: None,
            bf16_copies: params.iter().map(|_| None).collect(),
            live_rows: params.iter().map(|_| None).collect(),
            skip_dormant_rows: true,
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            params,
            config,
            step: 0,
        }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Elements over all parameters (each has two fp32 moments in the state).
    pub fn num_parameters(&self) -> u64 {
        self.params.iter().map(|p| p.tensor.numel() as u64).sum()
    }

    /// `zero_grad(set_to_none=True)`, torch's and HF's default: the next backward
    /// writes the gradients afresh (no zeroing pass, no accumulation pass, and no
    /// gradient memory held during the forward).
    pub fn zero_grad(&mut self) -> Result<()> {
        self.grad_divisor = None;
        let params: Vec<&Tensor> = self
            .params
            .iter()
            .map(|p| &p.tensor)
            .chain(self.bf16_copies.iter().flatten())
            .collect();
        Ok(torch_shim::set_grads_to_none(&params)?)
    }

    /// Hands the update bf16 copies of some parameters, as `(parameter, copy)` pairs
    /// ([`bert_model::SequenceClassifier::attach_bf16_copies`]): from now on a
    /// parameter's gradient is its copy's (bf16, counted with its fp32 value), and each
    /// update rewrites the copy from the updated fp32 weight in the same pass (the
    /// fused kernel's arithmetic; CPU only). Gradients are not accumulated in the
    /// copies' dtype: one backward per update.
    pub fn attach_bf16_copies(&mut self, copies: Vec<(Tensor, Tensor)>) -> Result<()> {
        if self.config.kind != OptimizerKind::AdamwTorchFused {
            return Err(TrainError::InvalidArgs(
                "bf16 weight copies are updated by the fused AdamW only".into(),
            ));
        }
        for (master, copy) in copies {
            let found = self.params.iter().position(|p| {
                p.tensor.data_ptr() == master.data_ptr() && p.tensor.size() == master.size()
            });
            let Some(i) = found else {
                return Err(TrainError::InvalidArgs(
                    "a bf16 copy's weight is not one of the optimizer's parameters".into(),
                ));
            };
            self.bf16_copies[i] = Some(copy);
        }
        self.sync_bf16_copies()
    }

    /// Rewrites every bf16 copy from its fp32 weight: after the weights changed other
    /// than through [`AdamW::step`] (a checkpoint loaded, weights broadcast).
    pub fn sync_bf16_copies(&self) -> Result<()> {
        tch::no_grad(|| {
            for (p, copy) in self.params.iter().zip(&self.bf16_copies) {
                if let Some(copy) = copy {
                    copy.shallow_clone().f_copy_(&p.tensor)?;
                }
            }
            Ok(())
        })
    }

    /// Each parameter's gradient: its bf16 copy's when it has one; a sparse one
    /// (`nn.Embedding(sparse=True)`) coalesced, its duplicate rows summed.
    fn defined_grads(&self) -> Result<Vec<(usize, Tensor)>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (i, (p, copy)) in self.params.iter().zip(&self.bf16_copies).enumerate() {
            let g = copy.as_ref().unwrap_or(&p.tensor).grad();
            if g.defined() {
                out.push((i, if g.is_sparse() { g.f_coalesce()? } else { g }));
            }
        }
        Ok(out)
    }

    /// `torch.nn.utils.clip_grad_norm_` over this optimizer's parameters: returns the
    /// gradients' norm before clipping (0-dim, on their device: no host sync). With
    /// the fused kernel the scaling is left to the next [`AdamW::step`], which divides
    /// the gradients by the factor's inverse as it reads them (writing them back
    /// clipped): one pass over the gradients fewer. Gradients read before that step
    /// are the unclipped ones.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor> {
        if self.config.kind == OptimizerKind::AdamwTorchFused {
            // A sparse gradient's norm is its rows' (coalesced, so each row once).
            let grads = self
                .defined_grads()?
                .into_iter()
                .map(|(_, g)| if g.is_sparse() { g.f_values() } else { Ok(g) })
                .collect::<std::result::Result<Vec<Tensor>, _>>()?;
            let refs: Vec<&Tensor> = grads.iter().collect();
            let deferred = tch::no_grad(|| torch_shim::clip_grad_norm_deferred(&refs, max_norm))?;
            if let Some((norm, divisor)) = deferred {
                self.grad_divisor = Some(divisor);
                return Ok(norm);
            }
        }
        let params: Vec<&Tensor> = self.params.iter().map(|p| &p.tensor).collect();
        clip_grad_norm(&params, max_norm)
    }

    /// One update at learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        match self.config.kind {
            OptimizerKind::AdamwTorchFused => self.fused_step(lr),
            OptimizerKind::AdamwTorch => self.single_tensor_step(lr),
        }
    }

    /// torch/optim/adamw.py `_fused_adamw`: one kernel call per parameter group.
    fn fused_step(&mut self, lr: f64) -> Result<()> {
        let AdamWConfig {
            beta1, beta2, eps, ..
        } = self.config;
        let grads: BTreeMap<usize, Tensor> = self.defined_grads()?.into_iter().collect();
        let grad_divisor = self.grad_divisor.take();
        let _ = tch::no_grad(|| self.step_count.fill_(self.step as f64));
        for (&i, grad) in &grads {
            if grad.is_sparse() && self.params[i].weight_decay == 0.0 {
                self.mark_live_rows(i, grad)?;
            }
        }
        // bf16 copies' and sparse gradients: AdamW's own kernel; the rest: ATen's.
        let own_kernel = |i: usize| self.bf16_copies[i].is_some() || grads[&i].is_sparse();
        let own: Vec<adamw_kernel::Slot<'_>> = grads
            .iter()
            .filter(|(&i, _)| own_kernel(i))
            .map(|(&i, grad)| adamw_kernel::Slot {
                master: &self.params[i].tensor,
                gradient: match &self.bf16_copies[i] {
                    Some(copy) => adamw_kernel::Gradient::Bf16 { grad, copy },
                    None => adamw_kernel::Gradient::SparseRows {
                        grad,
                        live: self.live_rows[i]
                            .as_deref()
                            .filter(|_| self.skip_dormant_rows),
                    },
                },
                exp_avg: &self.exp_avg[i],
                exp_avg_sq: &self.exp_avg_sq[i],
                weight_decay: self.params[i].weight_decay,
            })
            .collect();
        if !own.is_empty() {
            let hyper = adamw_kernel::Hyper {
                lr,
                beta1,
                beta2,
                eps,
                step: self.step,
                grad_divisor: grad_divisor.as_ref().map(|d| d.double_value(&[]) as f32),
            };
            tch::no_grad(|| adamw_kernel::step(&own, hyper))?;
        }
        for (weight_decay, members) in &self.groups {
            let members: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| grads.contains_key(&i) && !own_kernel(i))
                .collect();
            if members.is_empty() {
                continue;
            }
            let params: Vec<&Tensor> = members.iter().map(|&i| &self.params[i].tensor).collect();
            let g: Vec<&Tensor> = members.iter().map(|i| &grads[i]).collect();
            let m: Vec<&Tensor> = members.iter().map(|&i| &self.exp_avg[i]).collect();
            let v: Vec<&Tensor> = members.iter().map(|&i| &self.exp_avg_sq[i]).collect();
            let steps = vec![&self.step_count; members.len()];
            tch::no_grad(|| {
                torch_shim::fused_adamw(
                    &params,
                    &g,
                    &m,
                    &v,
                    &steps,
                    grad_divisor.as_ref(),
                    torch_shim::AdamWHyper {
                        lr,
                        beta1,
                        beta2,
                        weight_decay: *weight_decay,
                        eps,
                    },
                )
            })?;
        }
        Ok(())
    }

    /// Whether updates skip the rows of sparse-gradient parameters without weight
    /// decay whose moments are still all +0.0 (on by default): their update would
    /// leave them bit for bit as they are, so this only changes the time it takes.
    pub fn set_skip_dormant_rows(&mut self, skip: bool) {
        self.skip_dormant_rows = skip;
    }

    /// Marks the rows of parameter `i`'s sparse gradient live, first finding the
    /// live rows from the moments if they are not known.
    fn mark_live_rows(&mut self, i: usize, grad: &Tensor) -> Result<()> {
        let live = match &mut self.live_rows[i] {
            Some(live) => live,
            slot @ None => {
                let (m, v) = (&self.exp_avg[i], &self.exp_avg_sq[i]);
                let rows = m.size().first().copied().unwrap_or(1);
                // Any bit set: -0.0 counts as live, its update is not the identity.
                let nonzero = |t: &Tensor| -> Result<Tensor> {
                    Ok(t.f_reshape([rows, -1])?
                        .f_view_dtype(Kind::Int)?
                        .f_ne(0)?
                        .f_any_dim(1, false)?)
                };
                slot.insert(Vec::<bool>::try_from(
                    nonzero(m)?.f_logical_or(&nonzero(v)?)?,
                )?)
            }
        };
        for r in Vec::<i64>::try_from(grad.f_indices()?.f_view([-1])?)? {
            if let Some(flag) = usize::try_from(r).ok().and_then(|r| live.get_mut(r)) {
                *flag = true;
            }
        }
        Ok(())
    }

    fn single_tensor_step(&mut self, lr: f64) -> Result<()> {
        if self.params.iter().any(|p| p.tensor.grad().is_sparse()) {
            return Err(TrainError::InvalidArgs(
                "sparse gradients are updated by the fused AdamW only (adamw_torch_fused)".into(),
            ));
        }
        let AdamWConfig {
            beta1, beta2, eps, ..
        } = self.config;
        let bias_correction1 = 1.0 - beta1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias_correction1;
        let [tmp_buf, denom_buf] = &self.scratch;
        tch::no_grad(|| {
            for ((p, m), v) in self
                .params
                .iter_mut()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
            {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let shape = p.tensor.size();
                let n = p.tensor.numel() as i64;
                let tmp = tmp_buf.narrow(0, 0, n).view(shape.as_slice());
                let mut denom = denom_buf.narrow(0, 0, n).view(shape.as_slice());
                // torch/optim/adamw.py `_single_tensor_adamw`, same op order.
                if p.weight_decay != 0.0 {
                    let _ = p.tensor.g_mul_scalar_(1.0 - lr * p.weight_decay);
                }
                let _ = m.lerp_(&grad, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                // value * g * g, with value folded into the second factor (same product).
                let _ = grad.mul_scalar_out(&tmp, 1.0 - beta2);
                let _ = v.addcmul_(&grad, &tmp);
                // denom = sqrt(v) / sqrt(bias_correction2) + eps
                let _ = v.sqrt_out(&denom);
                let _ = denom.g_div_scalar_(bias_correction2_sqrt);
                let _ = denom.g_add_scalar_(eps);
                // p += (-step_size * m) / denom, as addcdiv's `value * t1 / t2`.
                let _ = m.mul_scalar_out(&tmp, -step_size);
                let _ = p.tensor.addcdiv_(&tmp, &denom);
            }
        });
        Ok(())
    }

    /// State as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`, `step`), for safetensors.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for ((p, m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            out.push((format!("exp_avg.{}", p.name), m.shallow_clone()));
            out.push((format!("exp_avg_sq.{}", p.name), v.shallow_clone()));
        }
        out.push(("step".to_string(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores `state()`'s output; every parameter must be present with its shape.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), String> {
        let mut map: BTreeMap<String, Tensor> = state.into_iter().collect();
        let step = map.remove("step").ok_or("optimizer state has no `step`")?;
        self.step = step.int64_value(&[0]);
        self.live_rows.iter_mut().for_each(|l| *l = None);
        for ((p, m), v) in self
            .params
            .iter()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            for (prefix, slot) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let key = format!("{prefix}.{}", p.name);
                let t = map
                    .remove(&key)
                    .ok_or_else(|| format!("optimizer state has no `{key}`"))?;
                if t.size() != slot.size() {
                    return Err(format!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.size(),
                        slot.size()
                    ));
                }
                tch::no_grad(|| slot.copy_(&t));
            }
        }
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (foreach path): scales the
/// gradients so their global L2 norm is at most `max_norm`; returns the norm before
/// clipping as a 0-dim tensor on the parameters' device, so no host sync is needed.
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) -> Result<Tensor> {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    let refs: Vec<&Tensor> = grads.iter().collect();
    Ok(tch::no_grad(|| {
        torch_shim::clip_grad_norm(&refs, max_norm)
    })?)
}
