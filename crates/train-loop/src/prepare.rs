//! What `run_glue.py` does between loading the model and building the Trainer: the
//! model's own tokenizer, with `max_seq_length` fitted to the model.

use bert_model::BertForSequenceClassification;
use glue_data::Preprocessor;

use crate::error::{Result, TrainError};

/// The model's tokenizer, ready to encode a GLUE split for it.
pub struct ModelTokenizer {
    pub preprocessor: Preprocessor,
    /// The length sequences are truncated at.
    pub max_seq_length: usize,
    /// The length asked for, when it was above the model's maximum and was lowered.
    pub clamped_from: Option<usize>,
}

/// The tokenizer next to `model`'s weights, truncating at `max_seq_length` or at the
/// model's `max_position_embeddings` if that is smaller (run_glue.py: "The
/// max_seq_length passed is larger than the maximum length for the model; using
/// max_seq_length=..."). A tokenizer with more tokens than the embedding matrix has rows
/// is refused here, before any id past the table reaches the model.
pub fn model_tokenizer(
    model: &BertForSequenceClassification,
    max_seq_length: usize,
) -> Result<ModelTokenizer> {
    let dir = model
        .tokenizer_dir
        .as_ref()
        .ok_or(TrainError::NoTokenizer)?;
    let limit = model.config.max_sequence_length().max(1) as usize;
    let (used, clamped_from) = if max_seq_length > limit {
        (limit, Some(max_seq_length))
    } else {
        (max_seq_length, None)
    };
    let preprocessor = Preprocessor::from_file(dir, used)?;
    let tokens = preprocessor.tokenizer().get_vocab_size(true);
    let rows = model.config.vocab_size.max(0) as usize;
    if tokens > rows {
        return Err(TrainError::TokenizerTooLarge {
            dir: dir.clone(),
            tokens,
            rows,
        });
    }
    Ok(ModelTokenizer {
        preprocessor,
        max_seq_length: used,
        clamped_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glue_testkit::test_model_dir;

    fn model_with(vocab_size: i64, max_positions: i64) -> BertForSequenceClassification {
        let mut config: bert_model::BertConfig = serde_json::from_str(
            &std::fs::read_to_string(test_model_dir().join("config.json")).unwrap(),
        )
        .unwrap();
        config.vocab_size = vocab_size;
        config.max_position_embeddings = max_positions;
        config.num_hidden_layers = 1;
        let mut model = BertForSequenceClassification::new(config, tch::Device::Cpu);
        model.tokenizer_dir = Some(test_model_dir());
        model
    }

    #[test]
    fn max_seq_length_is_clamped_to_the_model() {
        let tok = model_tokenizer(&model_with(30522, 512), 600).unwrap();
        assert_eq!((tok.max_seq_length, tok.clamped_from), (512, Some(600)));
        let tok = model_tokenizer(&model_with(30522, 512), 128).unwrap();
        assert_eq!((tok.max_seq_length, tok.clamped_from), (128, None));
    }

    #[test]
    fn a_tokenizer_larger_than_the_embedding_matrix_is_refused() {
        let Err(error) = model_tokenizer(&model_with(1000, 512), 128) else {
            panic!("a 30522-token tokenizer on a 1000-row model was accepted")
        };
        let text = error.to_string();
        assert!(
            text.contains("30522 tokens") && text.contains("1000 rows"),
            "{text}"
        );
        let mut model = model_with(30522, 512);
        model.tokenizer_dir = None;
        let Err(error) = model_tokenizer(&model, 128) else {
            panic!("a model without tokenizer was accepted")
        };
        assert!(error.to_string().contains("no tokenizer.json"), "{error}");
    }
}
