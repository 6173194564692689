//! HF checkpoints in and out: `from_pretrained` and `save_pretrained`, mirroring
//! `PreTrainedModel.from_pretrained` / `save_pretrained` for BERT and DistilBERT
//! classifiers (the architecture comes from `config.json`'s `model_type`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tch::{nn, Device, Kind, Tensor};

use crate::config::{Architecture, BertConfig};
use crate::error::{io_error, BertError, Result};
use crate::hub::ModelSource;
use crate::lora::{LoraConfig, ADAPTER_PREFIX};
use crate::model::{
    InferenceWeights, LastLayer, Layout, Precision, SequenceClassifier, SequenceClassifierOutput,
};

/// Files copied next to the weights so a saved folder is a complete HF model folder.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// What `from_pretrained` did with the checkpoint's keys (HF prints the same lists).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Model weights the checkpoint lacked, initialized as HF does (normal(0, initializer_range), zero bias).
    pub newly_initialized: Vec<String>,
    /// Checkpoint weights the model has no use for (pretraining heads `cls.*` and the like).
    pub unused: Vec<String>,
    /// HF's class name of the model loaded (`BertForSequenceClassification`, ...).
    pub class_name: &'static str,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.unused.is_empty() {
            writeln!(
                f,
                "Some weights of the checkpoint were not used: {}",
                self.unused.join(", ")
            )?;
        }
        if !self.newly_initialized.is_empty() {
            writeln!(
                f,
                "Some weights of {} were not initialized from the \
                 checkpoint and are newly initialized: {}\nYou should probably TRAIN this model \
                 on a down-stream task to be able to use it for predictions and inference.",
                self.class_name,
                self.newly_initialized.join(", ")
            )?;
        }
        Ok(())
    }
}

/// `BertForSequenceClassification` with its weights, config and origin.
pub struct BertForSequenceClassification {
    pub vs: nn::VarStore,
    pub config: BertConfig,
    pub model: SequenceClassifier,
    /// Folder holding the tokenizer files, copied on save.
    pub tokenizer_dir: Option<PathBuf>,
    /// The hub id or folder it was loaded from (an adapter's `base_model_name_or_path`).
    pub name_or_path: Option<String>,
}

impl fmt::Debug for BertForSequenceClassification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BertForSequenceClassification")
            .field("config", &self.config)
            .field("device", &self.vs.device())
            .finish()
    }
}

/// Pretraining heads a classifier does not use: BERT's `cls.*`, RoBERTa's `lm_head.*`,
/// DistilBERT's MLM head, DeBERTa's MLM and replaced-token-detection heads.
const PRETRAINING_HEADS: &[&str] = &[
    "cls.",
    "lm_head.",
    "lm_predictions.",
    "mask_predictions.",
    "vocab_transform.",
    "vocab_layer_norm.",
    "vocab_projector.",
];

/// Normalizes a checkpoint key to this model's naming: the encoder prefix (`bert.`,
/// `distilbert.`) for bare encoder checkpoints, legacy TF `gamma`/`beta` LayerNorm
/// names. `None`: not a weight of ours.
fn normalize_key(key: &str, architecture: Architecture) -> Option<String> {
    if PRETRAINING_HEADS.iter().any(|h| key.starts_with(h)) || key.ends_with("position_ids") {
        return None;
    }
    let key = key
        .strip_suffix(".gamma")
        .map(|k| format!("{k}.weight"))
        .or_else(|| key.strip_suffix(".beta").map(|k| format!("{k}.bias")))
        .unwrap_or_else(|| key.to_string());
    let prefix = architecture.prefix();
    // Top-level head modules; DeBERTa's `ContextPooler` is one (BERT's pooler is
    // `bert.pooler`).
    let head: &[&str] = match architecture {
        Architecture::DebertaV2 => &["classifier.", "pooler."],
        _ => &["classifier.", "pre_classifier."],
    };
    if key.starts_with(&format!("{prefix}.")) || head.iter().any(|h| key.starts_with(h)) {
        Some(key)
    } else {
        Some(format!("{prefix}.{key}"))
    }
}

fn weights_error(path: &Path, message: impl fmt::Display) -> BertError {
    BertError::Weights {
        path: path.to_path_buf(),
        message: message
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Calls `visit` with every tensor of a checkpoint file, by name. A safetensors file
/// is read once and each tensor handed over as a view of the file's bytes, so loading
/// holds the model and the file, never a second copy of the weights (which the heap
/// would keep after loading: RSS for the whole run).
fn for_each_weight(
    path: &Path,
    mut visit: impl FnMut(String, &Tensor) -> Result<()>,
) -> Result<()> {
    if path.extension().is_some_and(|e| e == "bin") {
        let tensors = Tensor::loadz_multi(path).map_err(|e| weights_error(path, e))?;
        for (name, tensor) in tensors {
            visit(name, &tensor)?;
        }
        return Ok(());
    }
    let bytes = fs::read(path).map_err(io_error(path))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| weights_error(path, e))?;
    for (name, view) in file.tensors() {
        let kind = Kind::try_from(view.dtype()).map_err(|e| weights_error(path, e))?;
        let size: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let mut strides = vec![1i64; size.len()];
        for i in (0..size.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * size[i + 1];
        }
        // SAFETY: `deserialize` checked that the view's bytes cover `size` elements of
        // `kind`; the tensor borrows `bytes`, which outlives it (dropped after `visit`,
        // which copies out of it). Unaligned data is fine: the CPU copy kernels load
        // unaligned.
        let tensor = unsafe {
            Tensor::f_from_blob(view.data().as_ptr(), &size, &strides, kind, Device::Cpu)
        }
        .map_err(|e| weights_error(path, e))?;
        visit(name, &tensor)?;
    }
    Ok(())
}

impl BertForSequenceClassification {
    /// A randomly initialized model (HF init) for `config`.
    pub fn new(config: BertConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let model = SequenceClassifier::load(&vs.root(), &config);
        let out = BertForSequenceClassification {
            vs,
            config,
            model,
            tokenizer_dir: None,
            name_or_path: None,
        };
        out.freeze_base();
        out
    }

    /// With LoRA, only the adapters and the modules to save are trained (PEFT).
    fn freeze_base(&self) {
        let Some(lora) = &self.config.lora else {
            return;
        };
        for (name, tensor) in self.vs.variables() {
            if !is_adapter_weight(&name) && !lora.saves(&name) {
                let _ = tensor.set_requires_grad(false);
            }
        }
    }

    /// The LoRA settings, when the model carries adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.config.lora.as_ref()
    }

    /// This model with fresh LoRA adapters (PEFT's `get_peft_model`): the weights so
    /// far are kept, the base is frozen, the adapters and the head are trainable.
    pub fn with_lora(&self, lora: LoraConfig) -> Result<Self> {
        lora.validate().map_err(BertError::Input)?;
        let mut config = self.config.clone();
        config.lora = Some(lora);
        let mut out = Self::new(config, self.device());
        out.tokenizer_dir = self.tokenizer_dir.clone();
        out.name_or_path = self.name_or_path.clone();
        out.copy_matching(self)?;
        Ok(out)
    }

    /// Copies every variable of `other` that this model has under the same name.
    fn copy_matching(&mut self, other: &Self) -> Result<()> {
        let theirs = other.vs.variables();
        let mut ours = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, var) in ours.iter_mut() {
                if let Some(t) = theirs.get(name) {
                    var.f_copy_(t)?;
                }
            }
            Ok(())
        })
    }

    /// A plain model with the adapters merged into the weights (PEFT's
    /// `merge_and_unload`: `W += B A * lora_alpha / r`).
    pub fn merged(&self) -> Result<Self> {
        let lora = self
            .lora()
            .ok_or_else(|| BertError::Input("the model has no LoRA adapters to merge".into()))?;
        let mut config = self.config.clone();
        config.lora = None;
        let mut out = Self::new(config, self.device());
        out.tokenizer_dir = self.tokenizer_dir.clone();
        out.name_or_path = self.name_or_path.clone();
        out.copy_matching(self)?;
        let theirs = self.vs.variables();
        let mut ours = out.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, var) in ours.iter_mut() {
                let Some(module) = name.strip_suffix(".weight") else {
                    continue;
                };
                let a = theirs.get(&format!("{module}.lora_A.weight"));
                let b = theirs.get(&format!("{module}.lora_B.weight"));
                if let (Some(a), Some(b)) = (a, b) {
                    let delta = b.f_matmul(a)?.f_mul(&Tensor::from(lora.scaling()))?;
                    let _ = var.f_add_(&delta)?;
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Writes the adapter as PEFT's `save_pretrained` does (`adapter_config.json`,
    /// `adapter_model.safetensors`), with the tokenizer files, atomically.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        atomic_fs::write_dir(dir, |tmp| self.write_adapter(tmp))
            .map_err(|f| f.into_inner(|path, source| BertError::Io { path, source }))
    }

    /// The adapter files into an existing folder, not atomically (see
    /// [`Self::write_pretrained`]).
    pub fn write_adapter(&self, dir: &Path) -> Result<()> {
        let lora = self
            .lora()
            .ok_or_else(|| BertError::Input("the model has no LoRA adapters to save".into()))?;
        let variables: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        let tensors: Vec<(String, Tensor)> = variables
            .iter()
            .filter(|(name, _)| is_adapter_weight(name) || lora.saves(name))
            .map(|(name, v)| {
                let host = v.detach().to(Device::Cpu).to_kind(Kind::Float).contiguous();
                (format!("{ADAPTER_PREFIX}{name}"), host)
            })
            .collect();
        Tensor::write_safetensors(&tensors, dir.join("adapter_model.safetensors"))?;
        let base = self.name_or_path.clone().unwrap_or_default();
        let json = serde_json::to_string_pretty(&lora.adapter_config(&base))
            .map_err(|e| BertError::Input(e.to_string()))?;
        let path = dir.join("adapter_config.json");
        fs::write(&path, json + "\n").map_err(io_error(&path))?;
        self.copy_tokenizer_files(dir)
    }

    fn copy_tokenizer_files(&self, dir: &Path) -> Result<()> {
        if let Some(src) = &self.tokenizer_dir {
            for f in TOKENIZER_FILES {
                let from = src.join(f);
                if from.is_file() {
                    let to = dir.join(f);
                    fs::copy(&from, &to).map_err(io_error(&to))?;
                }
            }
        }
        Ok(())
    }

    /// A PEFT LoRA adapter folder: its base model (`base_model_name_or_path`) with the
    /// adapter's weights, as `AutoPeftModelForSequenceClassification` loads it.
    fn from_adapter(
        source: &ModelSource,
        adapter_config: &Path,
        label_names: Option<&[&str]>,
        device: Device,
    ) -> Result<(Self, LoadReport)> {
        let text = fs::read_to_string(adapter_config).map_err(io_error(adapter_config))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BertError::Config {
                path: adapter_config.to_path_buf(),
                message: e.to_string(),
            })?;
        let (lora, base) =
            LoraConfig::from_adapter_config(&value).map_err(|message| BertError::Config {
                path: adapter_config.to_path_buf(),
                message,
            })?;
        let (base_model, _) = Self::from_pretrained(&base, label_names, device)?;
        let mut model = base_model.with_lora(lora)?;
        if let Ok(Some(tokenizer)) = source.file("tokenizer.json") {
            model.tokenizer_dir = tokenizer.parent().map(Path::to_path_buf);
        }
        let weights = source.require("adapter_model.safetensors")?;
        let report = model.load_weights(&weights)?;
        // What an adapter must bring: every adapter weight and the head.
        let lora = model.lora().expect("with_lora sets it").clone();
        let newly_initialized = report
            .newly_initialized
            .into_iter()
            .filter(|name| is_adapter_weight(name) || lora.saves(name))
            .collect();
        Ok((
            model,
            LoadReport {
                newly_initialized,
                ..report
            },
        ))
    }

    /// Loads a local HF folder or a hub id. `label_names`: the task's classes in order
    /// (empty for regression); `None` keeps the checkpoint's own head.
    pub fn from_pretrained(
        id_or_path: &str,
        label_names: Option<&[&str]>,
        device: Device,
    ) -> Result<(Self, LoadReport)> {
        let source = ModelSource::new(id_or_path);
        if let Ok(Some(adapter)) = source.file("adapter_config.json") {
            return Self::from_adapter(&source, &adapter, label_names, device);
        }
        let config_path = source.require("config.json")?;
        let mut config = BertConfig::from_file(&config_path)?;
        if let Some(names) = label_names {
            config.set_labels(names);
        }
        let weights_path = match source.file("model.safetensors")? {
            Some(p) => p,
            None => source
                .file("pytorch_model.bin")?
                .ok_or_else(|| BertError::NoWeights {
                    source_name: source.describe(),
                })?,
        };
        // Tokenizer files are optional; a hub model fetches them alongside.
        let tokenizer_dir = match source.file("tokenizer.json") {
            Ok(Some(p)) => {
                for f in &TOKENIZER_FILES[1..] {
                    let _ = source.file(f);
                }
                p.parent().map(Path::to_path_buf)
            }
            _ => None,
        };
        let mut model = Self::new(config, device);
        model.tokenizer_dir = tokenizer_dir;
        // An adapter saved from this model names it; a folder by its absolute path, so
        // the adapter loads from any working directory.
        model.name_or_path = Some(match fs::canonicalize(id_or_path) {
            Ok(path) if path.is_dir() => path.to_string_lossy().into_owned(),
            _ => id_or_path.to_string(),
        });
        let report = model.load_weights(&weights_path)?;
        Ok((model, report))
    }

    /// Copies checkpoint tensors into the model; unknown keys are reported, shape
    /// mismatches are errors.
    pub fn load_weights(&mut self, path: &Path) -> Result<LoadReport> {
        // bf16 copies of the old weights would outlive them.
        self.model.detach_bf16_copies();
        let mut variables = self.vs.variables();
        let mut loaded = BTreeSet::new();
        let mut unused = Vec::new();
        let architecture = self.config.architecture;
        for_each_weight(path, |key, tensor| {
            // PEFT adapter files prefix every key.
            let key = key
                .strip_prefix(ADAPTER_PREFIX)
                .map_or(key.clone(), str::to_string);
            let Some(name) = normalize_key(&key, architecture) else {
                if PRETRAINING_HEADS.iter().any(|h| key.starts_with(h)) {
                    unused.push(key);
                }
                return Ok(());
            };
            let Some(var) = variables.get_mut(&name) else {
                // DeBERTa-v3 checkpoints carry a position table their config does not
                // use (`position_biased_input: false`); HF drops it silently
                // (`_keys_to_ignore_on_load_unexpected`).
                let ignored = architecture == Architecture::DebertaV2
                    && name.ends_with("embeddings.position_embeddings.weight");
                if !ignored {
                    unused.push(key);
                }
                return Ok(());
            };
            if var.size() != tensor.size() {
                return Err(BertError::ShapeMismatch {
                    key,
                    checkpoint: tensor.size(),
                    model: var.size(),
                });
            }
            // `copy_` converts the dtype and moves to the device in one pass.
            tch::no_grad(|| var.f_copy_(tensor)).map_err(|e| weights_error(path, e))?;
            loaded.insert(name);
            Ok(())
        })?;
        let newly_initialized = variables
            .keys()
            .filter(|k| !loaded.contains(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        unused.sort();
        Ok(LoadReport {
            newly_initialized,
            unused,
            class_name: architecture.classifier_class(),
        })
    }

    /// `Bf16` needs a device with autocast (CPU or CUDA).
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == Precision::Bf16 && !matches!(self.device(), Device::Cpu | Device::Cuda(_)) {
            return Err(BertError::Input(format!(
                "bf16 autocast runs on CPU or CUDA, not {:?}",
                self.device()
            )));
        }
        self.model.bert.set_precision(precision);
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.model.bert.precision()
    }

    /// Padding-free (default) or HF's padded layout; outputs at real tokens are equal.
    pub fn set_layout(&mut self, layout: Layout) {
        self.model.bert.set_layout(layout);
    }

    /// Every token in the last layer (default), or only the first, the one the head
    /// reads (what training and evaluation use: same logits, less work).
    pub fn set_last_layer(&mut self, last_layer: LastLayer) {
        self.model.bert.set_last_layer(last_layer);
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// See [`SequenceClassifier::pack_for_inference`]: faster fp32 CPU inference
    /// while the guard lives; drop it before the weights next change.
    pub fn pack_for_inference(&self) -> Result<InferenceWeights<'_>> {
        self.model.pack_for_inference()
    }

    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> Result<SequenceClassifierOutput> {
        self.model
            .forward(input_ids, token_type_ids, attention_mask, labels, train)
    }

    /// Writes `model.safetensors`, `config.json` and the tokenizer files into `dir`,
    /// atomically: everything goes to a sibling temp folder that is synced and renamed
    /// at the end (an existing `dir` is replaced whole).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        if dir.file_name().is_none() {
            return Err(BertError::Input(format!(
                "{}: not a folder name",
                dir.display()
            )));
        }
        atomic_fs::write_dir(dir, |tmp| self.write_pretrained(tmp))
            .map_err(|f| f.into_inner(|path, source| BertError::Io { path, source }))
    }

    /// Writes the save_pretrained files into an existing folder, not atomically (for
    /// callers that assemble a larger folder, such as a training checkpoint).
    /// With LoRA the folder also gets the adapter files: `model.safetensors` (every
    /// weight, adapters included) serves exact resume, and loading the folder goes the
    /// adapter's way, so it never scores the base model without its adapters.
    pub fn write_pretrained(&self, dir: &Path) -> Result<()> {
        if self.lora().is_some() {
            self.write_adapter(dir)?;
        }
        let variables: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        let cpu: Vec<(String, Tensor)> = variables
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.detach().to(Device::Cpu).to_kind(Kind::Float).contiguous(),
                )
            })
            .collect();
        Tensor::write_safetensors(&cpu, dir.join("model.safetensors"))?;
        let mut config = self.config.clone();
        if config.id2label.is_none() {
            let names: Vec<String> = (0..config.labels()).map(|i| format!("LABEL_{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            config.set_labels(if config.labels() == 1 { &[] } else { &refs });
        }
        let json = serde_json::to_string_pretty(&config.to_json())
            .map_err(|e| BertError::Input(e.to_string()))?;
        let path = dir.join("config.json");
        fs::write(&path, json + "\n").map_err(io_error(&path))?;
        self.copy_tokenizer_files(dir)
    }
}

/// `...lora_A.weight` / `...lora_B.weight`.
fn is_adapter_weight(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}
