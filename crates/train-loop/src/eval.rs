//! Evaluation and prediction over an encoded split, batch by batch, in eval mode.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bert_model::{BertForSequenceClassification, Precision};
use glue_data::{Batch, BatchLabels, Collator, EncodedSplit, Task};
use glue_metrics::{classification, regression_nan_if_undefined};
use tch::{Device, Kind, Tensor};

use crate::distributed;
use crate::error::{Result, TrainError};

/// Batch buffers to device tensors: (input_ids, token_type_ids, attention_mask, labels).
pub fn batch_tensors(batch: &Batch, device: Device) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let shape = [batch.batch_size as i64, batch.seq_len as i64];
    let t = |v: &[i64]| Tensor::f_from_slice(v)?.f_view(shape)?.f_to(device);
    let labels = match &batch.labels {
        BatchLabels::Classes(c) => Tensor::f_from_slice(c)?,
        BatchLabels::Scores(s) => Tensor::f_from_slice(s)?,
    }
    .f_to(device)?;
    Ok((
        t(&batch.input_ids)?,
        t(&batch.token_type_ids)?,
        t(&batch.attention_mask)?,
        labels,
    ))
}

/// Model outputs over a split: class ids (argmax) or scores (regression), per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    Classes(Vec<i64>),
    Scores(Vec<f64>),
}

#[derive(Debug, Clone)]
pub struct EvalOutput {
    pub predictions: Predictions,
    /// Mean loss over examples; `None` for unlabelled (test) splits.
    pub loss: Option<f64>,
    /// `loss`, metrics by name, runtime and throughput (keys without the `eval_` prefix).
    pub metrics: BTreeMap<String, f64>,
}

/// Runs the model over every row of `split`; scores against its labels when it has
/// them. Rows go through the model longest first (batches of similar length, so
/// little padding) and come back in their original order; logits and the loss stay
/// on the device until the end, so there is one host sync per evaluation.
///
/// On CPU the batches run side by side, as many as there are intra-op threads, each
/// on one thread (small batches waste less time at OpenMP's fork and join that way);
/// the results are put back in batch order.
///
/// With a process group (see [`crate::distributed`]) batch `j` of that order runs on
/// rank `j % world_size` and the logits are gathered: every batch is the one a
/// single process would run, so predictions and metrics are the same, on every rank.
pub fn evaluate(
    model: &BertForSequenceClassification,
    task: Task,
    split: &EncodedSplit,
    collator: &Collator,
    batch_size: usize,
) -> Result<EvalOutput> {
    let start = Instant::now();
    // The weights stay put until evaluation returns.
    let _packed = model.pack_for_inference()?;
    let device = model.device();
    let labelled = split.labels.iter().all(|l| !l.is_missing());
    let regression_task = task.spec().is_regression();
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(split.features[i].len()));
    let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    let (rank, world) = (
        distributed::rank() as usize,
        distributed::world_size() as usize,
    );
    let shared = SharedModel(model);
    // One batch: its logits and its loss times its rows (zeros unlabelled).
    let forward_batch = |j: usize| -> Result<(Tensor, Tensor)> {
        let model = shared.get();
        let batch = collator.collate(split, chunks[j])?;
        let forward = || -> Result<_> {
            let (ids, types, mask, labels) = batch_tensors(&batch, device)?;
            Ok(model.forward(&ids, &types, &mask, labelled.then_some(&labels), false)?)
        };
        let out = forward().map_err(|e| match e.is_out_of_memory() {
            true => TrainError::EvalOutOfMemory { batch_size },
            false => e,
        })?;
        let loss = match out.loss {
            Some(loss) => loss.to_kind(Kind::Double) * chunks[j].len() as f64,
            None => Tensor::zeros([], (Kind::Double, device)),
        };
        Ok((out.logits, loss))
    };
    // This rank's batches, as (batch index, logits, loss).
    let mut done: Vec<(usize, Tensor, Tensor)> = Vec::with_capacity(chunks.len());
    let workers = eval_workers(device, world, chunks.len());
    if workers > 1 {
        let next = AtomicUsize::new(0);
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        let mut work = || -> Result<()> {
                            loop {
                                let j = next.fetch_add(1, Ordering::Relaxed);
                                if j >= chunks.len() {
                                    return Ok(());
                                }
                                // On an error the others stop at their next batch.
                                let (logits, loss) = forward_batch(j)
                                    .inspect_err(|_| next.store(chunks.len(), Ordering::Relaxed))?;
                                mine.push((j, logits, loss));
                            }
                        };
                        torch_shim::with_intra_op_threads(1, || {
                            in_eval_mode(shared.get(), device, &mut work)
                        })??;
                        Ok::<_, TrainError>(mine)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<_>>>()
        })?;
        done.extend(results.into_iter().flatten());
        done.sort_by_key(|(j, _, _)| *j);
    } else {
        let mut work = || -> Result<()> {
            for j in (rank..chunks.len()).step_by(world) {
                let (logits, loss) = forward_batch(j)?;
                done.push((j, logits, loss));
            }
            Ok(())
        };
        in_eval_mode(model, device, &mut work)?;
    }
    let mut logits = Vec::with_capacity(done.len());
    // Each batch's loss times its rows, in batch order (zeros for other ranks' batches),
    // summed on the host in that order: the same total with any number of ranks.
    let mut batch_losses: Vec<Tensor> = (0..chunks.len())
        .map(|_| Tensor::zeros([], (Kind::Double, device)))
        .collect();
    for (j, batch_logits, loss) in done {
        logits.push(batch_logits);
        batch_losses[j] = loss;
    }
    let width = task.spec().num_labels() as i64;
    let mine = if logits.is_empty() {
        Tensor::zeros([0, width], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&logits, 0).to(Device::Cpu)
    };
    let batch_losses = if batch_losses.is_empty() {
        Tensor::zeros([0], (Kind::Double, Device::Cpu))
    } else {
        Tensor::stack(&batch_losses, 0).to(Device::Cpu)
    };
    // Back to the split's order: row order[k] is at position k of the sorted logits.
    let sorted = match distributed::group() {
        None => mine,
        Some(group) => {
            group
                .all_reduce_sum(&batch_losses)
                .map_err(distributed::collective_error(
                    "the evaluation loss all-reduce",
                ))?;
            gather_batches(group, &mine, &chunks)?
        }
    };
    let loss_sum: f64 = Vec::<f64>::try_from(&batch_losses)?.iter().sum();
    let positions: Vec<i64> = {
        let mut p = vec![0i64; order.len()];
        for (k, &row) in order.iter().enumerate() {
            p[row] = k as i64;
        }
        p
    };
    let logits = sorted.index_select(0, &Tensor::from_slice(&positions));
    let mut classes = Vec::new();
    let mut scores = Vec::new();
    if regression_task {
        scores.extend(
            Vec::<f32>::try_from(logits.squeeze_dim(-1).to_kind(Kind::Float))?
                .into_iter()
                .map(f64::from),
        );
    } else {
        classes.extend(Vec::<i64>::try_from(logits.argmax(-1, false))?);
    }
    let n = split.len().max(1) as f64;
    let mut metrics = BTreeMap::new();
    let loss = labelled.then_some(loss_sum / n);
    if let Some(l) = loss {
        metrics.insert("loss".to_string(), l);
    }
    let predictions = if regression_task {
        Predictions::Scores(scores)
    } else {
        Predictions::Classes(classes)
    };
    if labelled && !split.is_empty() {
        let scores = match &predictions {
            Predictions::Classes(p) => {
                let refs: Vec<i64> = split.labels.iter().map(|l| l.as_f32() as i64).collect();
                classification(task.spec().metrics, p, &refs)?
            }
            Predictions::Scores(p) => {
                let refs: Vec<f64> = split.labels.iter().map(|l| f64::from(l.as_f32())).collect();
                // Constant predictions (a collapsed regressor): NaN, as HF logs it.
                regression_nan_if_undefined(task.spec().metrics, p, &refs)?
            }
        };
        metrics.extend(scores.0);
    }
    let runtime = start.elapsed().as_secs_f64();
    metrics.insert("runtime".to_string(), (runtime * 1e4).round() / 1e4);
    metrics.insert(
        "samples_per_second".to_string(),
        ((split.len() as f64 / runtime) * 1e3).round() / 1e3,
    );
    Ok(EvalOutput {
        predictions,
        loss,
        metrics,
    })
}

/// The model, read by several evaluation workers at once.
struct SharedModel<'a>(&'a BertForSequenceClassification);

// SAFETY: evaluation only reads the model: no gradients (no_grad), no dropout and so no
// draws from torch's generator (eval mode); libtorch ops may read one tensor from
// several threads at once, and the autocast state and its weight-cast cache are
// per thread.
unsafe impl Sync for SharedModel<'_> {}

impl<'a> SharedModel<'a> {
    /// Through a method, so closures capture the `Sync` wrapper, not its field.
    fn get(&self) -> &'a BertForSequenceClassification {
        self.0
    }
}

/// How many batches a CPU evaluation runs side by side, each on one thread: one per
/// intra-op thread. Evaluation batches are small (MRPC at batch 8: matrices of a few
/// hundred rows, attention per sequence), so splitting every op over the cores spends
/// a good share of each op waiting at OpenMP's fork and join; whole batches on their
/// own cores do not wait. Each batch computes exactly what it would on one thread.
/// On CUDA, and in data-parallel runs (a rank's share of the cores), one at a time.
fn eval_workers(device: Device, world: usize, batches: usize) -> usize {
    if device != Device::Cpu || world > 1 {
        return 1;
    }
    (tch::get_num_threads().max(1) as usize).min(batches).max(1)
}

/// Runs `work` as evaluation runs on this thread: no autograd, and under `--bf16`
/// one autocast region around every batch, which keeps autocast's cache of the
/// weights' bf16 casts for the whole evaluation: the weights do not change while it
/// runs, so they are cast once, not once per batch (HF's prediction_step enters
/// autocast per batch). Same casts, same logits.
fn in_eval_mode(
    model: &BertForSequenceClassification,
    device: Device,
    work: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    tch::no_grad(|| match model.precision() {
        Precision::Bf16 => torch_shim::autocast(device, Kind::BFloat16, work)?,
        Precision::Fp32 => work(),
    })
}

/// Every rank's logits (its batches `j % world_size == rank`, in order) gathered
/// back into the order of `chunks`. Shards are padded to the longest for the
/// all-gather, and the padding dropped.
fn gather_batches(
    group: &torch_shim::distributed::ProcessGroup,
    mine: &Tensor,
    chunks: &[&[usize]],
) -> Result<Tensor> {
    let world = group.world_size() as usize;
    let rows_of = |r: usize| -> i64 {
        chunks
            .iter()
            .enumerate()
            .filter(|(j, _)| j % world == r)
            .map(|(_, c)| c.len() as i64)
            .sum()
    };
    let longest = (0..world).map(rows_of).max().unwrap_or(0);
    let width = mine.size()[1];
    let padded = Tensor::zeros([longest, width], (Kind::Float, Device::Cpu));
    padded.narrow(0, 0, mine.size()[0]).copy_(mine);
    let shards = group
        .all_gather(&padded)
        .map_err(distributed::collective_error("the evaluation all-gather"))?;
    let mut cursor = vec![0i64; world];
    let pieces: Vec<Tensor> = chunks
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let r = j % world;
            let piece = shards[r].narrow(0, cursor[r], c.len() as i64);
            cursor[r] += c.len() as i64;
            piece
        })
        .collect();
    Ok(if pieces.is_empty() {
        Tensor::zeros([0, width], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&pieces, 0)
    })
}
