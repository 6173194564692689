//! Data parallelism as HF Trainer has it under `torchrun`: one process per device,
//! joined through PyTorch's own c10d (a TCPStore rendezvous and a Gloo process
//! group, see `torch_shim::distributed`). [`init_from_env`] reads the variables
//! torchrun sets; the [`Trainer`](crate::Trainer) then broadcasts the weights from
//! rank 0, reads a disjoint shard of every epoch's order, averages gradients with
//! one all-reduce per optimizer update, shards evaluation and gathers it, and only
//! rank 0 writes. Like `torch.distributed`, the group is process-wide.

use std::sync::OnceLock;
use std::time::Duration;

use tch::{Kind, Tensor};
use torch_shim::distributed::{GroupConfig, ProcessGroup};

use crate::error::{Result, TrainError};

static GROUP: OnceLock<ProcessGroup> = OnceLock::new();

/// HF's `ddp_timeout` default (1800 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What torchrun tells each process (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: i64,
    pub world_size: i64,
    pub local_rank: i64,
    pub local_world_size: i64,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the TCPStore; no rank hosts one.
    pub agent_store: bool,
}

impl LaunchEnv {
    /// `None` when `WORLD_SIZE` is not set (a plain single-process run).
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, value: Option<String>| -> Result<i64> {
            let value = value.ok_or_else(|| {
                TrainError::Distributed(format!(
                    "WORLD_SIZE is set but {name} is not; start the processes with torchrun or \
                     set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
                ))
            })?;
            value
                .trim()
                .parse()
                .map_err(|_| TrainError::Distributed(format!("{name}={value:?} is not a number")))
        };
        let world_size = number("WORLD_SIZE", Some(world))?;
        let rank = number("RANK", get("RANK"))?;
        if world_size < 1 || !(0..world_size).contains(&rank) {
            return Err(TrainError::Distributed(format!(
                "RANK={rank} does not fit WORLD_SIZE={world_size}"
            )));
        }
        let local_rank = get("LOCAL_RANK").map_or(Ok(rank), |v| number("LOCAL_RANK", Some(v)))?;
        let local_world_size = get("LOCAL_WORLD_SIZE")
            .map_or(Ok(world_size), |v| number("LOCAL_WORLD_SIZE", Some(v)))?;
        let master_port = number("MASTER_PORT", get("MASTER_PORT"))?;
        let master_port = u16::try_from(master_port).map_err(|_| {
            TrainError::Distributed(format!("MASTER_PORT={master_port} is not a TCP port"))
        })?;
        Ok(Some(LaunchEnv {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
        }))
    }
}

/// Joins the process group torchrun's variables describe (a no-op without them);
/// returns the launch environment. Fails with one line when the rendezvous does
/// not complete within `timeout` (port in use, master unreachable, a rank missing).
pub fn init_from_env(timeout: Duration) -> Result<Option<LaunchEnv>> {
    let Some(env) = LaunchEnv::from_env()? else {
        return Ok(None);
    };
    if GROUP.get().is_some() {
        return Ok(Some(env));
    }
    if !torch_shim::distributed::has_gloo() {
        return Err(TrainError::Distributed(
            "this build has no c10d Gloo backend (gloo's headers were missing when it was \
             compiled): run `cargo xtask setup`, rebuild, and launch again"
                .into(),
        ));
    }
    let group = ProcessGroup::gloo(&GroupConfig {
        master_addr: env.master_addr.clone(),
        master_port: env.master_port,
        rank: env.rank,
        world_size: env.world_size,
        host_store: env.rank == 0 && !env.agent_store,
        timeout,
    })
    .map_err(|e| {
        TrainError::Distributed(format!(
            "rank {} could not join the group at {}:{}: {} (is the port free and the master \
             reachable? every rank must start within --ddp-timeout)",
            env.rank, env.master_addr, env.master_port, e.0
        ))
    })?;
    let _ = GROUP.set(group);
    Ok(Some(env))
}

/// Makes CUDA collectives run on NCCL, on CUDA device `device` (DDP's "nccl"
/// backend); the group's Gloo side stays for CPU tensors.
pub fn use_nccl(device: usize) -> Result<()> {
    let Some(group) = group() else {
        return Ok(());
    };
    group.use_nccl(device).map_err(|e| {
        TrainError::Distributed(format!(
            "rank {} could not start NCCL on cuda:{device}: {} (--ddp-backend gloo averages \
             through host memory instead)",
            group.rank(),
            e.0
        ))
    })
}

/// The process group, once [`init_from_env`] joined one.
pub fn group() -> Option<&'static ProcessGroup> {
    GROUP.get()
}

pub fn rank() -> i64 {
    group().map_or(0, ProcessGroup::rank)
}

pub fn world_size() -> i64 {
    group().map_or(1, ProcessGroup::world_size)
}

/// HF's `is_world_process_zero`: the process that logs and writes files.
pub fn is_main_process() -> bool {
    rank() == 0
}

/// Turns a failed collective into one line that says what was going on.
pub(crate) fn collective_error(
    what: &str,
) -> impl FnOnce(torch_shim::TorchError) -> TrainError + '_ {
    move |e| {
        TrainError::Distributed(format!(
            "rank {}: {what} failed: {} (another rank stopped or hung; see its output)",
            rank(),
            e.0
        ))
    }
}

/// `DistributedSampler(drop_last=False)`: the order padded to a multiple of the
/// world size with its first entries, then every `world_size`-th entry from `rank`.
/// Batches of `b` taken from each shard together hold `world_size * b` consecutive
/// entries of the order, so a step sees the examples a single process with the
/// global batch would.
pub fn shard(order: &[usize], rank: usize, world_size: usize) -> Vec<usize> {
    if world_size <= 1 || order.is_empty() {
        return order.to_vec();
    }
    let total = order.len().div_ceil(world_size) * world_size;
    (rank..total)
        .step_by(world_size)
        .map(|i| order[i % order.len()])
        .collect()
}

/// Bucket size of the gradient all-reduce (DDP's `bucket_cap_mb` default, 25 MB).
const BUCKET_BYTES: i64 = 25 * 1024 * 1024;

/// Averages the tensors over the group, in flat buckets of ~25 MB (one collective
/// per bucket, as DDP's reducer): every rank ends with the same values.
pub(crate) fn average(group: &ProcessGroup, tensors: &[Tensor]) -> Result<()> {
    let world = group.world_size() as f64;
    let mut start = 0;
    while start < tensors.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < tensors.len() && (end == start || bytes < BUCKET_BYTES) {
            bytes += tensors[end].numel() as i64 * tensors[end].kind().elt_size_in_bytes() as i64;
            end += 1;
        }
        let bucket = &tensors[start..end];
        let flat = Tensor::f_cat(
            &bucket
                .iter()
                .map(|t| t.f_flatten(0, -1))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            0,
        )?;
        group
            .all_reduce_sum(&flat)
            .map_err(collective_error("the gradient all-reduce"))?;
        let flat = flat.f_div(&Tensor::from(world).f_to_kind(flat.kind())?)?;
        let mut offset = 0;
        for t in bucket {
            let n = t.numel() as i64;
            t.shallow_clone()
                .f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(t)?)?;
            offset += n;
        }
        start = end;
    }
    Ok(())
}

/// Rank 0's values into every rank's tensors (DDP's start-up broadcast).
pub(crate) fn broadcast_from_main(group: &ProcessGroup, tensors: &[Tensor]) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for t in tensors {
            group
                .broadcast(t, 0)
                .map_err(collective_error("the weight broadcast"))?;
        }
        Ok(())
    })
}

/// A 0-dim f64 summed over the group.
pub(crate) fn sum_scalar(group: &ProcessGroup, value: &Tensor, what: &str) -> Result<Tensor> {
    // A copy of its own: the all-reduce writes in place.
    let mut t = Tensor::f_zeros([], (Kind::Double, tch::Device::Cpu))?;
    t.f_copy_(value)?;
    group.all_reduce_sum(&t).map_err(collective_error(what))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_interleave_and_pad_like_distributed_sampler() {
        let order = [4, 0, 3, 1, 2];
        assert_eq!(shard(&order, 0, 2), [4, 3, 2]);
        assert_eq!(shard(&order, 1, 2), [0, 1, 4]);
        assert_eq!(shard(&order, 0, 1), order);
    }

    #[test]
    fn launch_env_reads_torchrun_variables() {
        let vars = |pairs: &'static [(&str, &str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(LaunchEnv::from_lookup(vars(&[])).unwrap(), None);
        let env = LaunchEnv::from_lookup(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.master_port), (1, 2, 29500));
        assert!(env.agent_store);
        let error = LaunchEnv::from_lookup(vars(&[("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("RANK is not"), "{error}");
        let error = LaunchEnv::from_lookup(vars(&[("WORLD_SIZE", "2"), ("RANK", "2")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RANK=2 does not fit WORLD_SIZE=2"),
            "{error}"
        );
    }
}
