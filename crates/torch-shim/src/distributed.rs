//! PyTorch's own c10d for data-parallel training: a `TCPStore` rendezvous and a
//! `ProcessGroupGloo` (CPU), as `torch.distributed.init_process_group("gloo")` makes
//! them, with the collectives DDP uses; on CUDA, an NCCL communicator beside it
//! ([`ProcessGroup::use_nccl`]) for the tensors on the GPU.

use std::sync::OnceLock;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::{ffi, Result, TorchError};

/// Whether this build has c10d's Gloo backend (gloo's headers were found at build time).
pub fn has_gloo() -> bool {
    ffi::has_gloo()
}

/// Where and how a rank joins its group (torchrun's `MASTER_ADDR`, `MASTER_PORT`,
/// `RANK`, `WORLD_SIZE`).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub master_addr: String,
    pub master_port: u16,
    pub rank: i64,
    pub world_size: i64,
    /// This process starts the TCPStore server (rank 0, unless torchrun's agent
    /// already serves one: `TORCHELASTIC_USE_AGENT_STORE=True`).
    pub host_store: bool,
    /// Rendezvous and every collective fail after this long (HF's `ddp_timeout`).
    pub timeout: Duration,
}

/// One rank's membership of a Gloo process group (and of an NCCL communicator,
/// once [`ProcessGroup::use_nccl`] made one).
pub struct ProcessGroup {
    handle: ffi::GroupHandle,
    nccl: OnceLock<ffi::NcclHandle>,
    rank: i64,
    world_size: i64,
    timeout: Duration,
}

/// NCCL's version as `major.minor.patch`; fails when libnccl.so.2 cannot be loaded
/// (it comes with CUDA builds of torch).
pub fn nccl_version() -> Result<String> {
    let v = ffi::nccl_version()?;
    // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
    Ok(format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100))
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup(gloo, rank {} of {})",
            self.rank, self.world_size
        )
    }
}

impl ProcessGroup {
    /// Joins (and, with `host_store`, serves) the rendezvous; returns once all
    /// `world_size` ranks are connected.
    pub fn gloo(config: &GroupConfig) -> Result<Self> {
        if !(0..config.world_size).contains(&config.rank) {
            return Err(TorchError(format!(
                "rank {} is outside world size {}",
                config.rank, config.world_size
            )));
        }
        // Gloo's transport binds to the address the peers reach the master through
        // on one machine; for several machines, the master's own interface.
        let bind_host = if is_loopback(&config.master_addr) {
            "127.0.0.1".to_string()
        } else {
            local_hostname()
        };
        let handle = ffi::new_gloo(&ffi::GlooSpec {
            host: &config.master_addr,
            port: config.master_port,
            rank: config.rank,
            world_size: config.world_size,
            host_store: config.host_store,
            timeout_ms: config.timeout.as_millis().min(i64::MAX as u128) as i64,
            bind_host: &bind_host,
            prefix: "glue_rs",
        })?;
        Ok(ProcessGroup {
            handle,
            nccl: OnceLock::new(),
            rank: config.rank,
            world_size: config.world_size,
            timeout: config.timeout,
        })
    }

    /// Joins an NCCL communicator on CUDA device `device` (DDP's "nccl" backend):
    /// rank 0's `ncclUniqueId` reaches the others over Gloo. From then on, collectives
    /// on CUDA tensors run on NCCL, on PyTorch's current stream; CPU tensors stay on
    /// Gloo. A collective that does not finish within the group's timeout aborts the
    /// communicator and fails.
    pub fn use_nccl(&self, device: usize) -> Result<()> {
        if self.nccl.get().is_some() {
            return Ok(());
        }
        let id = if self.rank == 0 {
            ffi::nccl_unique_id()?
        } else {
            [0u8; ffi::NCCL_ID_BYTES]
        };
        let shared = Tensor::f_from_slice(&id)?;
        ffi::broadcast(&self.handle, &shared, 0)?;
        let mut id = [0u8; ffi::NCCL_ID_BYTES];
        shared.f_copy_data_u8(&mut id, ffi::NCCL_ID_BYTES)?;
        let timeout_ms = self.timeout.as_millis().min(i64::MAX as u128) as i64;
        let comm = ffi::nccl_comm(&id, self.rank, self.world_size, device, timeout_ms)?;
        let _ = self.nccl.set(comm);
        Ok(())
    }

    /// Whether [`ProcessGroup::use_nccl`] made a communicator.
    pub fn has_nccl(&self) -> bool {
        self.nccl.get().is_some()
    }

    pub fn rank(&self) -> i64 {
        self.rank
    }

    pub fn world_size(&self) -> i64 {
        self.world_size
    }

    /// `dist.all_reduce(tensor)` (sum), in place.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        match self.nccl_for(tensor) {
            Some(comm) => ffi::nccl_all_reduce_sum(comm, tensor),
            None => through_host(tensor, |t| ffi::all_reduce_sum(&self.handle, t)),
        }
    }

    /// `dist.broadcast(tensor, src=root)`, in place.
    pub fn broadcast(&self, tensor: &Tensor, root: i64) -> Result<()> {
        match self.nccl_for(tensor) {
            Some(comm) => ffi::nccl_broadcast(comm, tensor, root),
            None => through_host(tensor, |t| ffi::broadcast(&self.handle, t, root)),
        }
    }

    /// The NCCL communicator, for a CUDA tensor when there is one.
    fn nccl_for(&self, tensor: &Tensor) -> Option<&ffi::NcclHandle> {
        self.nccl.get().filter(|_| tensor.device().is_cuda())
    }

    /// `dist.all_gather`: every rank's `tensor` (same shape on all), in rank order,
    /// on `tensor`'s device.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let host = tensor.f_to(Device::Cpu)?.f_contiguous()?;
        let outputs: Vec<Tensor> = (0..self.world_size).map(|_| host.empty_like()).collect();
        let refs: Vec<&Tensor> = outputs.iter().collect();
        ffi::all_gather(&self.handle, &host, &refs)?;
        outputs
            .into_iter()
            .map(|t| Ok(t.f_to(tensor.device())?))
            .collect()
    }

    /// `dist.barrier()`.
    pub fn barrier(&self) -> Result<()> {
        ffi::barrier(&self.handle)
    }

    /// The same f64 from every rank, summed (a host value, e.g. a loss).
    pub fn sum_f64(&self, value: f64) -> Result<f64> {
        let t = Tensor::from(value).to_kind(Kind::Double);
        self.all_reduce_sum(&t)?;
        Ok(t.double_value(&[]))
    }
}

/// Runs an in-place Gloo collective on `tensor`, through a host copy when it lives
/// on a GPU (Gloo's transport is TCP; NCCL, when joined, takes CUDA tensors instead).
fn through_host(tensor: &Tensor, op: impl FnOnce(&Tensor) -> Result<()>) -> Result<()> {
    if tensor.device() == Device::Cpu {
        return op(tensor);
    }
    let host = tensor.f_to(Device::Cpu)?;
    op(&host)?;
    tensor.shallow_clone().f_copy_(&host)?;
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ranks in two threads over loopback: all-reduce, broadcast, all-gather.
    #[test]
    fn two_ranks_reduce_broadcast_and_gather() {
        if !has_gloo() {
            eprintln!("*** SKIPPED: built without gloo headers (cargo xtask setup) ***");
            return;
        }
        let port = 29_000 + (std::process::id() % 1000) as u16;
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let group = ProcessGroup::gloo(&GroupConfig {
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        rank,
                        world_size: 2,
                        host_store: rank == 0,
                        timeout: Duration::from_secs(30),
                    })
                    .unwrap();
                    let t = Tensor::from_slice(&[1.0f32, 2.0]) * (rank + 1) as f64;
                    group.all_reduce_sum(&t).unwrap();
                    let b = Tensor::from_slice(&[rank as f32]);
                    group.broadcast(&b, 1).unwrap();
                    let gathered = group.all_gather(&Tensor::from_slice(&[rank])).unwrap();
                    group.barrier().unwrap();
                    (
                        Vec::<f32>::try_from(t).unwrap(),
                        f32::try_from(b.get(0)).unwrap(),
                        gathered
                            .iter()
                            .map(|g| i64::try_from(g.get(0)).unwrap())
                            .collect::<Vec<_>>(),
                    )
                })
            })
            .collect();
        for handle in ranks {
            let (sum, broadcast, gathered) = handle.join().unwrap();
            assert_eq!(sum, [3.0, 6.0]);
            assert_eq!(broadcast, 1.0);
            assert_eq!(gathered, [0, 1]);
        }
    }

    /// Off CUDA builds of torch NCCL is absent, and says where it comes from; with
    /// it (`LD_LIBRARY_PATH` holding the nvidia-nccl wheel's lib folder), a rank-0
    /// id can be drawn without a GPU.
    #[test]
    fn nccl_loads_or_says_where_it_comes_from() {
        match nccl_version() {
            Ok(version) => {
                eprintln!("NCCL {version}");
                assert!(version.starts_with("2."), "{version}");
                let id = ffi::nccl_unique_id().unwrap();
                assert!(id.iter().any(|&b| b != 0));
            }
            Err(e) => assert!(
                e.0.contains("NCCL could not be loaded") && e.0.contains("nvidia-nccl"),
                "{e}"
            ),
        }
    }
}
