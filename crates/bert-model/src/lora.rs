//! LoRA as PEFT has it (`peft.LoraConfig`, `peft.tuners.lora.Linear`, task `SEQ_CLS`):
//! each targeted linear layer gains `lora_A` (`[r, in]`, kaiming-uniform) and `lora_B`
//! (`[out, r]`, zeros) and computes `W x + b + B A dropout(x) * lora_alpha / r`; the base
//! model is frozen and the classifier trained in full (PEFT's `modules_to_save`).
//! Adapters are saved and read in PEFT's format: `adapter_config.json` and
//! `adapter_model.safetensors` with `base_model.model.`-prefixed keys.

use serde::{Deserialize, Serialize};

use crate::config::Architecture;

/// PEFT's key prefix in `adapter_model.safetensors`.
pub(crate) const ADAPTER_PREFIX: &str = "base_model.model.";

/// PEFT `LoraConfig` fields glue-rs reads and writes, with PEFT's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: i64,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Module names, or the last parts of them (PEFT's matching: `query` targets every
    /// `...attention.self.query`).
    pub target_modules: Vec<String>,
    /// Modules trained in full and saved with the adapter (PEFT adds the classifier).
    pub modules_to_save: Vec<String>,
}

impl LoraConfig {
    /// PEFT's defaults: r 8, alpha 8, no dropout, the architecture's query and value
    /// projections (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`).
    pub fn new(architecture: Architecture) -> Self {
        let targets: &[&str] = match architecture {
            Architecture::Bert | Architecture::Roberta => &["query", "value"],
            Architecture::DistilBert => &["q_lin", "v_lin"],
            Architecture::DebertaV2 => &["query_proj", "value_proj"],
        };
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            modules_to_save: vec!["classifier".into(), "score".into()],
        }
    }

    pub fn scaling(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Whether the linear layer at `module` (dotted path) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        !self.saves(module)
            && self
                .target_modules
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}")))
    }

    /// Whether `name` (a module or parameter path) lies in a module trained in full.
    pub fn saves(&self, name: &str) -> bool {
        name.split('.')
            .any(|part| self.modules_to_save.iter().any(|m| m == part))
    }

    /// A one-line reason when the values cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.r < 1 {
            return Err(format!("--lora-r must be at least 1, got {}", self.r));
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return Err(format!(
                "--lora-alpha must be positive, got {}",
                self.lora_alpha
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(format!(
                "--lora-dropout must be in [0, 1), got {}",
                self.lora_dropout
            ));
        }
        if self.target_modules.is_empty() {
            return Err("--lora-target-modules names no module".into());
        }
        Ok(())
    }

    /// `adapter_config.json` as `peft.LoraConfig.save_pretrained` writes it (the
    /// fields PEFT needs; the others take PEFT's defaults when it reads the file).
    pub(crate) fn adapter_config(&self, base_model: &str) -> serde_json::Value {
        serde_json::json!({
            "base_model_name_or_path": base_model,
            "peft_type": "LORA",
            "task_type": "SEQ_CLS",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "modules_to_save": self.modules_to_save,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_dora": false,
            "use_rslora": false,
        })
    }

    /// Reads a PEFT `adapter_config.json`: the LoRA settings and the base model.
    pub(crate) fn from_adapter_config(value: &serde_json::Value) -> Result<(Self, String), String> {
        let field = |k: &str| value.get(k).filter(|v| !v.is_null());
        if field("peft_type").and_then(|v| v.as_str()) != Some("LORA") {
            return Err("peft_type is not LORA; only LoRA adapters are supported".into());
        }
        for unsupported in ["use_dora", "use_rslora"] {
            if field(unsupported).and_then(|v| v.as_bool()) == Some(true) {
                return Err(format!("{unsupported} adapters are not supported"));
            }
        }
        let targets = match field("target_modules") {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => return Err("target_modules is missing".into()),
        };
        let mut saved: Vec<String> = match field("modules_to_save") {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        // PeftModelForSequenceClassification always trains and saves the head.
        for head in ["classifier", "score"] {
            if !saved.iter().any(|s| s == head) {
                saved.push(head.into());
            }
        }
        let config = LoraConfig {
            r: field("r").and_then(|v| v.as_i64()).unwrap_or(8),
            lora_alpha: field("lora_alpha").and_then(|v| v.as_f64()).unwrap_or(8.0),
            lora_dropout: field("lora_dropout")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0),
            target_modules: targets,
            modules_to_save: saved,
        };
        config.validate()?;
        let base = field("base_model_name_or_path")
            .and_then(|v| v.as_str())
            .ok_or("base_model_name_or_path is missing")?
            .to_string();
        Ok((config, base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_as_in_peft() {
        let lora = LoraConfig::new(Architecture::Bert);
        assert!(lora.targets("bert.encoder.layer.3.attention.self.query"));
        assert!(lora.targets("bert.encoder.layer.3.attention.self.value"));
        assert!(!lora.targets("bert.encoder.layer.3.attention.self.key"));
        assert!(!lora.targets("bert.encoder.layer.3.attention.self.query_x"));
        let dense = LoraConfig {
            target_modules: vec!["dense".into()],
            ..lora.clone()
        };
        assert!(dense.targets("bert.encoder.layer.0.output.dense"));
        assert!(dense.targets("bert.pooler.dense"));
        assert!(lora.saves("classifier.weight"));
        assert!(!lora.saves("bert.pooler.dense.weight"));
        assert_eq!(lora.scaling(), 1.0);
    }

    #[test]
    fn adapter_config_round_trips() {
        let lora = LoraConfig {
            r: 4,
            lora_alpha: 16.0,
            ..LoraConfig::new(Architecture::DistilBert)
        };
        let (back, base) =
            LoraConfig::from_adapter_config(&lora.adapter_config("org/model")).unwrap();
        assert_eq!((back, base.as_str()), (lora, "org/model"));
        let dora = serde_json::json!({"peft_type": "LORA", "use_dora": true});
        assert!(LoraConfig::from_adapter_config(&dora).is_err());
    }
}
