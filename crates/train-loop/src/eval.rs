//! Evaluation and prediction over an encoded split, batch by batch, in eval mode.

use std::collections::BTreeMap;
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
    let mut logits = Vec::with_capacity(chunks.len().div_ceil(world));
    // Each batch's loss times its rows, in batch order (zeros for other ranks' batches),
    // summed on the host in that order: the same total with any number of ranks.
    let mut batch_losses = Vec::with_capacity(chunks.len());
    let mut run_batches = || -> Result<()> {
        for (j, chunk) in chunks.iter().enumerate() {
            if j % world != rank {
                batch_losses.push(Tensor::zeros([], (Kind::Double, device)));
                continue;
            }
            let batch = collator.collate(split, chunk)?;
            let forward = || -> Result<_> {
                let (ids, types, mask, labels) = batch_tensors(&batch, device)?;
                Ok(model.forward(&ids, &types, &mask, labelled.then_some(&labels), false)?)
            };
            let out = forward().map_err(|e| match e.is_out_of_memory() {
                true => TrainError::EvalOutOfMemory { batch_size },
                false => e,
            })?;
            batch_losses.push(match out.loss {
                Some(loss) => loss.to_kind(Kind::Double) * chunk.len() as f64,
                None => Tensor::zeros([], (Kind::Double, device)),
            });
            logits.push(out.logits);
        }
        Ok(())
    };
    tch::no_grad(|| match model.precision() {
        // One autocast region around every batch keeps autocast's cache of the
        // weights' bf16 casts for the whole evaluation: the weights do not change
        // while it runs, so they are cast once, not once per batch (HF's
        // prediction_step enters autocast per batch). Same casts, same logits.
        Precision::Bf16 => torch_shim::autocast(device, Kind::BFloat16, run_batches)?,
        Precision::Fp32 => run_batches(),
    })?;
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
