//! AdamW over tensors, update for update `torch.optim.AdamW` (single-tensor path),
//! with state (step, exp_avg, exp_avg_sq) that checkpoints as named tensors.
//! Also `clip_grad_norm`, as `torch.nn.utils.clip_grad_norm_`.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

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
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Param>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Two flat buffers as large as the largest parameter: the update's temporaries
    /// live here instead of being allocated (and page-faulted in) at every step.
    scratch: [Tensor; 2],
    /// Updates done so far (torch keeps one per parameter; all are equal here).
    pub step: i64,
}

impl AdamW {
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Self {
        let zeros = |p: &Param| p.tensor.zeros_like().detach();
        let largest = params.iter().max_by_key(|p| p.tensor.numel());
        let flat = |p: Option<&Param>| match p {
            Some(p) => Tensor::zeros(
                [p.tensor.numel() as i64],
                (p.tensor.kind(), p.tensor.device()),
            ),
            None => Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
        };
        AdamW {
            scratch: [flat(largest), flat(largest)],
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

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// One update at learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps } = self.config;
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

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: scales gradients so their global
/// L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for g in &grads {
            let _ = g.shallow_clone().g_mul_(&coef.to_kind(g.kind()));
        }
        total.to_kind(Kind::Double).double_value(&[])
    })
}
