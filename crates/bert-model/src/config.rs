//! `BertConfig`: HF `config.json`, field for field (transformers' `BertConfig`), also
//! read from a DistilBERT `config.json` (its own field names mapped to BERT's, and back
//! on save), with the [`Architecture`] taken from `model_type` as `AutoConfig` does.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_error, BertError, Result};

/// Activation of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact erf GELU (HF `"gelu"`).
    Gelu,
    /// tanh approximation (HF `"gelu_new"`, also `"gelu_pytorch_tanh"`).
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    Relu,
}

fn d_vocab_size() -> i64 {
    30522
}
fn d_hidden_size() -> i64 {
    768
}
fn d_layers() -> i64 {
    12
}
fn d_heads() -> i64 {
    12
}
fn d_intermediate() -> i64 {
    3072
}
fn d_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn d_dropout() -> f64 {
    0.1
}
fn d_max_positions() -> i64 {
    512
}
fn d_type_vocab() -> i64 {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_init_range() -> f64 {
    0.02
}

/// Which encoder a `config.json` describes (`model_type`), as `AutoModel` dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Architecture {
    /// transformers' `modeling_bert.py`.
    #[default]
    Bert,
    /// transformers' `modeling_distilbert.py`: no token types, no pooler, a
    /// `pre_classifier` + ReLU head, no dropout after the attention output.
    DistilBert,
    /// transformers' `modeling_roberta.py`: BERT's encoder, positions counted from
    /// `pad_token_id + 1`, no pooler, `RobertaClassificationHead` (dense, tanh, out_proj).
    Roberta,
    /// transformers' `modeling_deberta_v2.py` (DeBERTa-v2 and v3): disentangled
    /// relative-position attention, no token types by default, a `ContextPooler` head.
    DebertaV2,
}

impl Architecture {
    /// The `model_type` values this crate runs, for error messages.
    pub const SUPPORTED: &'static str = "bert, distilbert, roberta, deberta-v2";

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Architecture::Bert),
            "distilbert" => Some(Architecture::DistilBert),
            "roberta" => Some(Architecture::Roberta),
            "deberta-v2" => Some(Architecture::DebertaV2),
            _ => None,
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
            Architecture::Roberta => "roberta",
            Architecture::DebertaV2 => "deberta-v2",
        }
    }

    /// HF's class name, written to `architectures` on save.
    pub fn classifier_class(self) -> &'static str {
        match self {
            Architecture::Bert => "BertForSequenceClassification",
            Architecture::DistilBert => "DistilBertForSequenceClassification",
            Architecture::Roberta => "RobertaForSequenceClassification",
            Architecture::DebertaV2 => "DebertaV2ForSequenceClassification",
        }
    }

    /// The encoder's prefix in the classifier's state dict (`bert.`, `distilbert.`,
    /// `deberta.`).
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::DebertaV2 => "deberta",
            other => other.model_type(),
        }
    }
}

/// DistilBERT's `config.json` names (transformers' `DistilBertConfig`) for BERT's.
const DISTILBERT_NAMES: &[(&str, &str)] = &[
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("activation", "hidden_act"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
    ("seq_classif_dropout", "classifier_dropout"),
];

/// `DistilBertConfig()` defaults where they differ from `BertConfig()`'s.
fn distilbert_defaults() -> [(&'static str, serde_json::Value); 2] {
    [("n_layers", 6.into()), ("seq_classif_dropout", 0.2.into())]
}

/// `DebertaV2Config()` defaults where they differ from `BertConfig()`'s.
fn deberta_defaults() -> [(&'static str, serde_json::Value); 7] {
    [
        ("vocab_size", 128100.into()),
        ("hidden_size", 1536.into()),
        ("num_hidden_layers", 24.into()),
        ("num_attention_heads", 24.into()),
        ("intermediate_size", 6144.into()),
        ("type_vocab_size", 0.into()),
        ("layer_norm_eps", 1e-7.into()),
    ]
}

fn d_true() -> bool {
    true
}
fn d_minus_one() -> i64 {
    -1
}
fn d_none() -> String {
    "none".into()
}

/// `pos_att_type`: a list (`["p2c", "c2p"]`, as transformers saves it) or the
/// `"p2c|c2p"` string of the original DeBERTa configs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum PosAttType {
    List(Vec<String>),
    Joined(String),
}

/// DeBERTa-v2's own `config.json` fields (transformers' `DebertaV2Config`, and the ones
/// its modeling code reads with `getattr`), with its defaults. They stay in
/// [`BertConfig::extra`] too, so a save writes them back as they were.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DebertaOptions {
    #[serde(default)]
    pub relative_attention: bool,
    /// < 1: `max_position_embeddings`.
    #[serde(default = "d_minus_one")]
    pub max_relative_positions: i64,
    /// > 0: relative distances are log-bucketed into this many buckets per side.
    #[serde(default = "d_minus_one")]
    pub position_buckets: i64,
    /// `"layer_norm"`: the relative embeddings go through `encoder.LayerNorm`.
    #[serde(default = "d_none")]
    pub norm_rel_ebd: String,
    /// The content projections also project the relative embeddings (DeBERTa-v3).
    #[serde(default)]
    pub share_att_key: bool,
    #[serde(default, deserialize_with = "pos_att_types")]
    pub pos_att_type: Vec<String>,
    /// Absolute position embeddings added to the input (false in DeBERTa-v3).
    #[serde(default = "d_true")]
    pub position_biased_input: bool,
    #[serde(default)]
    pub pooler_dropout: f64,
    #[serde(default = "d_act")]
    pub pooler_hidden_act: HiddenAct,
    /// The classifier's dropout; `None`: `hidden_dropout_prob`.
    #[serde(default)]
    pub cls_dropout: Option<f64>,
    #[serde(default)]
    pub pooler_hidden_size: Option<i64>,
    #[serde(default)]
    pub embedding_size: Option<i64>,
    #[serde(default)]
    pub attention_head_size: Option<i64>,
    #[serde(default)]
    pub conv_kernel_size: i64,
}

fn pos_att_types<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    Ok(match Option::<PosAttType>::deserialize(d)? {
        None => Vec::new(),
        Some(PosAttType::List(list)) => list,
        Some(PosAttType::Joined(joined)) => joined
            .to_lowercase()
            .split('|')
            .map(|s| s.trim().to_string())
            .collect(),
    })
}

impl DebertaOptions {
    pub fn c2p(&self) -> bool {
        self.pos_att_type.iter().any(|t| t == "c2p")
    }

    pub fn p2c(&self) -> bool {
        self.pos_att_type.iter().any(|t| t == "p2c")
    }

    /// `max_relative_positions`, or `max_position_embeddings` when it is < 1 (HF).
    pub fn max_relative(&self, cfg: &BertConfig) -> i64 {
        if self.max_relative_positions < 1 {
            cfg.max_position_embeddings
        } else {
            self.max_relative_positions
        }
    }

    /// Relative embedding rows per side (`pos_ebd_size`, HF's `att_span`).
    pub fn span(&self, cfg: &BertConfig) -> i64 {
        if self.position_buckets > 0 {
            self.position_buckets
        } else {
            self.max_relative(cfg)
        }
    }

    pub fn layer_norm_rel_embeddings(&self) -> bool {
        self.norm_rel_ebd
            .to_lowercase()
            .split('|')
            .any(|s| s.trim() == "layer_norm")
    }

    /// The settings this crate does not implement, as one line.
    fn validate(&self, cfg: &BertConfig) -> std::result::Result<(), String> {
        if self.conv_kernel_size > 0 {
            return Err(format!(
                "field `conv_kernel_size`: DeBERTa's convolution layer ({}) is not supported, only 0",
                self.conv_kernel_size
            ));
        }
        for (name, value, expected) in [
            ("embedding_size", self.embedding_size, cfg.hidden_size),
            (
                "pooler_hidden_size",
                self.pooler_hidden_size,
                cfg.hidden_size,
            ),
            (
                "attention_head_size",
                self.attention_head_size,
                cfg.head_dim(),
            ),
        ] {
            if let Some(v) = value.filter(|v| *v != expected) {
                return Err(format!(
                    "field `{name}`: {v} is not supported, only {expected} (from hidden_size)"
                ));
            }
        }
        if let Some(t) = self
            .pos_att_type
            .iter()
            .find(|t| *t != "c2p" && *t != "p2c")
        {
            return Err(format!(
                "field `pos_att_type`: `{t}` is not supported, only `c2p` and `p2c`"
            ));
        }
        Ok(())
    }
}

/// Defaults are those of `transformers.BertConfig()` (bert-base-uncased).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    #[serde(default = "d_vocab_size")]
    pub vocab_size: i64,
    #[serde(default = "d_hidden_size")]
    pub hidden_size: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: i64,
    #[serde(default = "d_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "d_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "d_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "d_max_positions")]
    pub max_position_embeddings: i64,
    #[serde(default = "d_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    /// HF derives num_labels from id2label; both are written on save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// `regression`, `single_label_classification` or `multi_label_classification`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Every other field of the file, kept so a save writes it back.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// From `model_type`; not a field of its own in the file.
    #[serde(skip)]
    pub architecture: Architecture,
    /// LoRA adapters the model is built with (from `adapter_config.json`, never written
    /// to `config.json`).
    #[serde(skip)]
    pub lora: Option<crate::lora::LoraConfig>,
    /// DeBERTa-v2's attention settings (from the same file; `None` for other encoders).
    #[serde(skip)]
    pub deberta: Option<DebertaOptions>,
}

impl Default for BertConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults deserialize")
    }
}

impl BertConfig {
    /// Reads and checks `config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let error = |message: String| BertError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        Self::from_json(value).map_err(error)
    }

    /// Reads a parsed `config.json` of any supported `model_type`; the error names the
    /// field as the file spells it.
    pub fn from_json(mut value: serde_json::Value) -> std::result::Result<Self, String> {
        let model_type = value.get("model_type").and_then(|t| t.as_str());
        let architecture = match model_type {
            None => Architecture::Bert,
            Some(t) => Architecture::from_model_type(t).ok_or_else(|| {
                format!(
                    "field `model_type`: `{t}` is not supported; supported: {}",
                    Architecture::SUPPORTED
                )
            })?,
        };
        if architecture == Architecture::DistilBert {
            let object = value
                .as_object_mut()
                .ok_or_else(|| "the file is not a JSON object".to_string())?;
            if object.get("sinusoidal_pos_embds") == Some(&serde_json::Value::Bool(true)) {
                return Err(
                    "field `sinusoidal_pos_embds`: fixed sinusoidal positions are not \
                            supported, only learned ones (false)"
                        .into(),
                );
            }
            for (name, default) in distilbert_defaults() {
                object.entry(name).or_insert(default);
            }
            for (theirs, ours) in DISTILBERT_NAMES {
                if let Some(v) = object.remove(*theirs) {
                    object.insert(ours.to_string(), v);
                }
            }
        }
        let deberta = if architecture == Architecture::DebertaV2 {
            let object = value
                .as_object_mut()
                .ok_or_else(|| "the file is not a JSON object".to_string())?;
            for (name, default) in deberta_defaults() {
                object.entry(name).or_insert(default);
            }
            let options: DebertaOptions = serde_path_to_error::deserialize(value.clone())
                .map_err(|e| format!("field `{}`: {}", e.path(), e.inner()))?;
            Some(options)
        } else {
            None
        };
        let mut config: BertConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let field = DISTILBERT_NAMES
                .iter()
                .find(|(_, ours)| architecture == Architecture::DistilBert && *ours == field)
                .map_or(field.as_str(), |(theirs, _)| theirs);
            format!("field `{field}`: {}", e.inner())
        })?;
        config.architecture = architecture;
        config.deberta = deberta;
        config.validate()?;
        Ok(config)
    }

    /// The `config.json` this config was read from, in its architecture's field names,
    /// with `architectures` and `model_type` set for a sequence classifier.
    pub fn to_json(&self) -> serde_json::Value {
        let mut config = self.clone();
        config.architectures = Some(vec![self.architecture.classifier_class().into()]);
        config.model_type = Some(self.architecture.model_type().into());
        let mut value = serde_json::to_value(&config).expect("a config serializes");
        if self.architecture == Architecture::DistilBert {
            let object = value
                .as_object_mut()
                .expect("a struct serializes to an object");
            for (theirs, ours) in DISTILBERT_NAMES {
                if let Some(v) = object.remove(*ours) {
                    object.insert(theirs.to_string(), v);
                }
            }
            // BERT fields DistilBERT does not have (its LayerNorm eps is fixed at 1e-12).
            object.remove("type_vocab_size");
            object.remove("layer_norm_eps");
        }
        value
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.position_embedding_type {
            if t != "absolute" {
                return Err(format!(
                    "field `position_embedding_type`: `{t}` is not supported, only `absolute`"
                ));
            }
        }
        // DeBERTa-v2 has no token types by default (`type_vocab_size: 0`).
        let min_type_vocab = i64::from(self.architecture != Architecture::DebertaV2);
        if self.type_vocab_size < min_type_vocab {
            return Err(format!(
                "field `type_vocab_size`: must be at least {min_type_vocab}, got {}",
                self.type_vocab_size
            ));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v <= 0 {
                return Err(format!("field `{name}`: must be positive, got {v}"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "field `hidden_size`: {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        match &self.deberta {
            Some(options) => options.validate(self),
            None => Ok(()),
        }
    }

    /// The position id of a sequence's first token: 0, or RoBERTa's `padding_idx + 1`
    /// (`create_position_ids_from_input_ids`).
    pub fn position_offset(&self) -> i64 {
        match self.architecture {
            Architecture::Roberta => self.pad_token_id + 1,
            _ => 0,
        }
    }

    /// The longest sequence the position table holds (RoBERTa's 514 rows give 512).
    pub fn max_sequence_length(&self) -> i64 {
        self.max_position_embeddings - self.position_offset()
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of classifier outputs as HF decides it: num_labels, else id2label's size, else 2.
    pub fn labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(BTreeMap::len))
            .unwrap_or(2)
    }

    /// Sets the head for `label_names` (empty: regression with one output), as
    /// HF's `from_pretrained(num_labels=..., id2label=...)` does.
    pub fn set_labels(&mut self, label_names: &[&str]) {
        let regression = label_names.is_empty();
        let names: Vec<String> = if regression {
            vec!["LABEL_0".to_string()]
        } else {
            label_names.iter().map(|s| s.to_string()).collect()
        };
        self.num_labels = Some(names.len());
        self.id2label = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect(),
        );
        self.label2id = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as i64))
                .collect(),
        );
        self.problem_type = Some(
            if regression {
                "regression"
            } else {
                "single_label_classification"
            }
            .to_string(),
        );
    }
}
