//! Dynamic padding: each batch is padded to its own longest example, as HF's
//! `DataCollatorWithPadding` does, so short batches cost short compute.

use serde::Serialize;

use crate::error::{DataError, Result};
use crate::load::Label;
use crate::tokenize::{EncodedSplit, Preprocessor};

/// Labels of a batch: class indices, or float scores for regression (stsb).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum BatchLabels {
    Classes(Vec<i64>),
    Scores(Vec<f32>),
}

/// A padded batch as row-major `[batch_size, seq_len]` buffers, ready for any tensor library.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub labels: BatchLabels,
    /// Row positions of the examples in their split.
    pub rows: Vec<usize>,
}

impl Batch {
    pub fn shape(&self) -> [usize; 2] {
        [self.batch_size, self.seq_len]
    }
}

/// Pads a list of examples to the longest one, optionally rounded up to a multiple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collator {
    pub pad_id: u32,
    pub pad_type_id: u32,
    pub pad_to_multiple_of: Option<usize>,
}

impl Collator {
    pub fn new(preprocessor: &Preprocessor) -> Self {
        Collator {
            pad_id: preprocessor.pad_id(),
            pad_type_id: preprocessor.pad_type_id(),
            pad_to_multiple_of: None,
        }
    }

    pub fn with_pad_to_multiple_of(mut self, multiple: Option<usize>) -> Self {
        self.pad_to_multiple_of = multiple;
        self
    }

    /// Collates the examples at `rows` of `split` into one padded batch.
    pub fn collate(&self, split: &EncodedSplit, rows: &[usize]) -> Result<Batch> {
        if rows.is_empty() {
            return Err(DataError::InvalidArgument(
                "cannot collate an empty batch".into(),
            ));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= split.len()) {
            return Err(DataError::IndexOutOfRange {
                index: bad,
                split: "encoded split".into(),
                len: split.len(),
            });
        }
        let longest = rows
            .iter()
            .map(|&r| split.features[r].len())
            .max()
            .unwrap_or(0);
        let seq_len = match self.pad_to_multiple_of {
            Some(m) if m > 1 => longest.div_ceil(m) * m,
            _ => longest,
        };
        let n = rows.len() * seq_len;
        let mut input_ids = vec![i64::from(self.pad_id); n];
        let mut token_type_ids = vec![i64::from(self.pad_type_id); n];
        let mut attention_mask = vec![0i64; n];
        for (b, &r) in rows.iter().enumerate() {
            let f = &split.features[r];
            let row = b * seq_len;
            for (t, ((&id, &ty), &m)) in f
                .input_ids
                .iter()
                .zip(&f.token_type_ids)
                .zip(&f.attention_mask)
                .enumerate()
            {
                input_ids[row + t] = i64::from(id);
                token_type_ids[row + t] = i64::from(ty);
                attention_mask[row + t] = i64::from(m);
            }
        }
        let labels = match split.labels.first() {
            Some(Label::Score(_)) => {
                BatchLabels::Scores(rows.iter().map(|&r| split.labels[r].as_f32()).collect())
            }
            _ => BatchLabels::Classes(
                rows.iter()
                    .map(|&r| match split.labels[r] {
                        Label::Class(c) => c,
                        Label::Score(s) => s as i64,
                    })
                    .collect(),
            ),
        };
        Ok(Batch {
            batch_size: rows.len(),
            seq_len,
            input_ids,
            token_type_ids,
            attention_mask,
            labels,
            rows: rows.to_vec(),
        })
    }
}
