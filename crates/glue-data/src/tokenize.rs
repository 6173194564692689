//! Tokenization as HF `tokenizer(s1, s2, truncation=True, max_length=L)` does it:
//! special tokens added, `longest_first` truncation, no padding (the collator pads).

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use tokenizers::{
    EncodeInput, Encoding, PaddingParams, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{DataError, Result};
use crate::fast_wordpiece::{BertLayout, FastWordPiece};
use crate::load::{Example, GlueSplit, Label};

/// HF's default `max_length` for GLUE fine-tuning (`run_glue.py --max_seq_length`).
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 128;

/// Model inputs of one example, unpadded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

impl From<&Encoding> for Features {
    fn from(e: &Encoding) -> Self {
        Features {
            input_ids: e.get_ids().to_vec(),
            token_type_ids: e.get_type_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
        }
    }
}

fn check_texts(texts: &[String]) -> Result<()> {
    if texts.is_empty() || texts.len() > 2 {
        return Err(DataError::InvalidArgument(format!(
            "an example has {} texts; GLUE tasks have 1 or 2",
            texts.len()
        )));
    }
    Ok(())
}

/// A tokenized split: features, labels and hub `idx`, row-aligned.
#[derive(Debug, Clone)]
pub struct EncodedSplit {
    pub features: Vec<Features>,
    pub labels: Vec<Label>,
    pub idx: Vec<i32>,
}

impl EncodedSplit {
    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    pub fn lengths(&self) -> Vec<usize> {
        self.features.iter().map(Features::len).collect()
    }
}

/// Wraps a `tokenizers::Tokenizer` configured for GLUE preprocessing.
#[derive(Clone)]
pub struct Preprocessor {
    tokenizer: Tokenizer,
    max_seq_length: usize,
    pad_id: u32,
    pad_type_id: u32,
    /// BERT layout: texts are tokenized alone and truncated/assembled by us (as HF does).
    layout: Option<BertLayout>,
    fast: Option<FastWordPiece>,
}

impl Preprocessor {
    /// Loads `tokenizer.json` (a file, or a model folder holding one).
    pub fn from_file(path: &Path, max_seq_length: usize) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            return Err(DataError::Tokenizer {
                path: file,
                message: "file not found (pass a model folder holding tokenizer.json)".into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| DataError::Tokenizer {
            path: file.clone(),
            message: e.to_string(),
        })?;
        Self::new(tokenizer, max_seq_length)
    }

    /// Takes any tokenizer and makes it encode like HF with `truncation=True`:
    /// many shipped tokenizer.json files switch fixed padding to 128 on, which would
    /// defeat dynamic padding, so padding is turned off (its pad id is kept for the collator).
    pub fn new(mut tokenizer: Tokenizer, max_seq_length: usize) -> Result<Self> {
        if max_seq_length < 4 {
            return Err(DataError::InvalidArgument(format!(
                "max_seq_length {max_seq_length} is too small; use at least 4 (default {DEFAULT_MAX_SEQ_LENGTH})"
            )));
        }
        let (pad_id, pad_type_id) = match tokenizer.get_padding() {
            Some(PaddingParams {
                pad_id,
                pad_type_id,
                ..
            }) => (*pad_id, *pad_type_id),
            // BERT's `[PAD]`, RoBERTa's `<pad>`.
            None => (
                tokenizer
                    .token_to_id("[PAD]")
                    .or_else(|| tokenizer.token_to_id("<pad>"))
                    .unwrap_or(0),
                0,
            ),
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| DataError::InvalidArgument(e.to_string()))?;
        let layout = BertLayout::detect(&tokenizer);
        let fast = layout.and(FastWordPiece::new(&tokenizer));
        if layout.is_some() {
            // Truncation happens in `BertLayout::assemble`, with HF's arithmetic.
            tokenizer
                .with_truncation(None)
                .map_err(|e| DataError::InvalidArgument(e.to_string()))?;
        }
        Ok(Preprocessor {
            tokenizer,
            max_seq_length,
            pad_id,
            pad_type_id,
            layout,
            fast,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// True when plain-ASCII texts skip the full `tokenizers` pipeline (same ids, less work).
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Model inputs of one example, always through the full `tokenizers` pipeline.
    pub fn encode_features_full(&self, texts: &[String]) -> Result<Features> {
        let texts = as_transformers_reads(texts);
        let Some(layout) = self.layout else {
            return self.encode_texts(texts).map(|e| Features::from(&e));
        };
        check_texts(texts)?;
        let pieces = |text: &String| -> Result<Vec<u32>> {
            self.tokenizer
                .encode(text.as_str(), false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Encode {
                    index: 0,
                    message: e.to_string(),
                })
        };
        let a = pieces(&texts[0])?;
        let b = texts.get(1).map(pieces).transpose()?;
        Ok(layout.assemble(a, b, self.max_seq_length))
    }

    /// Model inputs of one example: the fast path when it applies, else the full pipeline.
    pub fn encode_features(&self, texts: &[String]) -> Result<Features> {
        let texts = as_transformers_reads(texts);
        if let (Some(layout), Some(fast)) = (self.layout, &self.fast) {
            if let Some((a, b)) = fast.encode(texts) {
                return Ok(layout.assemble(a, b, self.max_seq_length));
            }
        }
        self.encode_features_full(texts)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn pad_type_id(&self) -> u32 {
        self.pad_type_id
    }

    /// The token strings of ids (for display).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.tokenizer
                    .id_to_token(id)
                    .unwrap_or_else(|| format!("<{id}>"))
            })
            .collect()
    }

    /// The `tokenizers` encoding of one or two texts; truncated by `tokenizers` itself
    /// only for non-BERT layouts (use `encode_features` for model inputs).
    pub fn encode_texts(&self, texts: &[String]) -> Result<Encoding> {
        let texts = as_transformers_reads(texts);
        check_texts(texts)?;
        let input: EncodeInput = match texts {
            [a] => a.as_str().into(),
            [a, b, ..] => (a.as_str(), b.as_str()).into(),
            [] => unreachable!("checked above"),
        };
        self.tokenizer
            .encode(input, true)
            .map_err(|e| DataError::Encode {
                index: 0,
                message: e.to_string(),
            })
    }

    /// Encodes examples in parallel; the output keeps the input order.
    pub fn encode_examples(&self, examples: &[Example]) -> Result<Vec<Features>> {
        examples
            .par_iter()
            .enumerate()
            .map(|(index, ex)| {
                self.encode_features(&ex.texts).map_err(|e| match e {
                    DataError::Encode { message, .. } => DataError::Encode { index, message },
                    other => other,
                })
            })
            .collect()
    }

    /// Tokenizes a whole split, keeping labels and `idx` aligned with the features.
    pub fn encode_split(&self, split: &GlueSplit) -> Result<EncodedSplit> {
        Ok(EncodedSplit {
            features: self.encode_examples(&split.examples)?,
            labels: split.examples.iter().map(|e| e.label).collect(),
            idx: split.examples.iter().map(|e| e.idx).collect(),
        })
    }
}

/// transformers tests the second text for truth (`if text_pair:`), so an empty second
/// text means a single-text input: `("a", "")` is `[CLS] a [SEP]`, while `("a", " ")`
/// is a pair, `[CLS] a [SEP] [SEP]`.
fn as_transformers_reads(texts: &[String]) -> &[String] {
    match texts {
        [_, second] if second.is_empty() => &texts[..1],
        _ => texts,
    }
}
