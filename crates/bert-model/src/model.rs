//! BERT in tch, block for block as HF `transformers/models/bert/modeling_bert.py`.
//! Parameter paths equal HF's state-dict keys, so one save is loadable by both.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::config::{BertConfig, HiddenAct};

/// fp32 master weights always; `Bf16` runs the matmuls in bfloat16 (what autocast does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

fn init_normal(cfg: &BertConfig) -> Init {
    // HF `BertPreTrainedModel._init_weights`: normal(0, initializer_range), zero bias.
    Init::Randn {
        mean: 0.0,
        stdev: cfg.initializer_range,
    }
}

fn linear(p: nn::Path, cfg: &BertConfig, input: i64, output: i64) -> nn::Linear {
    nn::linear(
        p,
        input,
        output,
        nn::LinearConfig {
            ws_init: init_normal(cfg),
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

/// `x @ W^T + b` in x's dtype (weights are cast per call, as autocast does).
fn apply_linear(x: &Tensor, l: &nn::Linear) -> Tensor {
    let kind = x.kind();
    x.linear(&l.ws.to_kind(kind), l.bs.as_ref().map(|b| b.to_kind(kind)))
}

/// LayerNorm runs in fp32 whatever the compute dtype, then casts back.
fn apply_layer_norm(x: &Tensor, ln: &nn::LayerNorm, eps: f64) -> Tensor {
    let kind = x.kind();
    let dim = ln.ws.as_ref().map(|w| w.size()).unwrap_or_default();
    x.to_kind(Kind::Float)
        .layer_norm(&dim, ln.ws.as_ref(), ln.bs.as_ref(), eps, true)
        .to_kind(kind)
}

fn layer_norm(p: nn::Path, cfg: &BertConfig) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![cfg.hidden_size],
        nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        },
    )
}

/// HF `BertEmbeddings`: word + position + token type, LayerNorm, dropout.
#[derive(Debug)]
struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    layer_norm: nn::LayerNorm,
    dropout: f64,
    eps: f64,
}

impl Embeddings {
    fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        let emb = |name: &str, n: i64| {
            nn::embedding(
                &p / name,
                n,
                cfg.hidden_size,
                nn::EmbeddingConfig {
                    ws_init: init_normal(cfg),
                    ..Default::default()
                },
            )
        };
        Embeddings {
            word: emb("word_embeddings", cfg.vocab_size),
            position: emb("position_embeddings", cfg.max_position_embeddings),
            token_type: emb("token_type_embeddings", cfg.type_vocab_size),
            layer_norm: layer_norm(&p / "LayerNorm", cfg),
            dropout: cfg.hidden_dropout_prob,
            eps: cfg.layer_norm_eps,
        }
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Tensor {
        let seq = input_ids.size()[1];
        let positions = Tensor::arange(seq, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let sum = input_ids.apply(&self.word)
            + positions.apply(&self.position)
            + token_type_ids.apply(&self.token_type);
        apply_layer_norm(&sum, &self.layer_norm, self.eps).dropout(self.dropout, train)
    }
}

/// HF `BertSdpaSelfAttention` + `BertSelfOutput` (post-LN residual).
#[derive(Debug)]
struct Attention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    output: nn::Linear,
    layer_norm: nn::LayerNorm,
    heads: i64,
    head_dim: i64,
    attention_dropout: f64,
    hidden_dropout: f64,
    eps: f64,
}

impl Attention {
    fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        let h = cfg.hidden_size;
        let s = &p / "self";
        let o = &p / "output";
        Attention {
            query: linear(&s / "query", cfg, h, h),
            key: linear(&s / "key", cfg, h, h),
            value: linear(&s / "value", cfg, h, h),
            output: linear(&o / "dense", cfg, h, h),
            layer_norm: layer_norm(&o / "LayerNorm", cfg),
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
            eps: cfg.layer_norm_eps,
        }
    }

    fn forward(&self, hidden: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let (b, s, h) = hidden
            .size3()
            .expect("hidden states are [batch, seq, hidden]");
        let split = |x: Tensor| x.view([b, s, self.heads, self.head_dim]).transpose(1, 2);
        let q = split(apply_linear(hidden, &self.query));
        let k = split(apply_linear(hidden, &self.key));
        let v = split(apply_linear(hidden, &self.value));
        let dropout = if train { self.attention_dropout } else { 0.0 };
        let context = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            dropout,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([b, s, h]);
        let out = apply_linear(&context, &self.output).dropout(self.hidden_dropout, train);
        apply_layer_norm(&(out + hidden), &self.layer_norm, self.eps)
    }
}

/// HF `BertIntermediate` + `BertOutput`: dense, activation, dense, post-LN residual.
#[derive(Debug)]
struct FeedForward {
    intermediate: nn::Linear,
    output: nn::Linear,
    layer_norm: nn::LayerNorm,
    act: HiddenAct,
    dropout: f64,
    eps: f64,
}

impl FeedForward {
    fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        FeedForward {
            intermediate: linear(
                &p / "intermediate" / "dense",
                cfg,
                cfg.hidden_size,
                cfg.intermediate_size,
            ),
            output: linear(
                &p / "output" / "dense",
                cfg,
                cfg.intermediate_size,
                cfg.hidden_size,
            ),
            layer_norm: layer_norm(&p / "output" / "LayerNorm", cfg),
            act: cfg.hidden_act,
            dropout: cfg.hidden_dropout_prob,
            eps: cfg.layer_norm_eps,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = apply_linear(x, &self.intermediate);
        let y = match self.act {
            HiddenAct::Gelu => y.gelu("none"),
            HiddenAct::GeluNew => y.gelu("tanh"),
            HiddenAct::Relu => y.relu(),
        };
        let y = apply_linear(&y, &self.output).dropout(self.dropout, train);
        apply_layer_norm(&(y + x), &self.layer_norm, self.eps)
    }
}

/// HF `BertLayer`.
#[derive(Debug)]
struct Layer {
    attention: Attention,
    feed_forward: FeedForward,
}

/// HF `BertModel`'s outputs.
#[derive(Debug)]
pub struct BertOutput {
    pub last_hidden_state: Tensor,
    pub pooled_output: Tensor,
}

/// HF `BertModel`: embeddings, encoder, pooler (tanh over [CLS]).
#[derive(Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: nn::Linear,
    precision: Precision,
}

impl BertModel {
    pub fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        let encoder = &p / "encoder" / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = &encoder / i;
                Layer {
                    attention: Attention::load(&l / "attention", cfg),
                    feed_forward: FeedForward::load(l, cfg),
                }
            })
            .collect();
        BertModel {
            embeddings: Embeddings::load(&p / "embeddings", cfg),
            layers,
            pooler: linear(
                &p / "pooler" / "dense",
                cfg,
                cfg.hidden_size,
                cfg.hidden_size,
            ),
            precision: Precision::Fp32,
        }
    }

    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// `input_ids`, `token_type_ids`, `attention_mask`: int64 `[batch, seq]`, mask 1 = token.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> BertOutput {
        let kind = self.precision.kind();
        // Additive mask [batch, 1, 1, seq]: 0 where attended, dtype-min at padding,
        // as HF's `_prepare_4d_attention_mask_for_sdpa`.
        let mask = (1.0 - attention_mask.to_kind(kind).unsqueeze(1).unsqueeze(1)) * min_value(kind);
        let mut hidden = self
            .embeddings
            .forward(input_ids, token_type_ids, train)
            .to_kind(kind);
        for layer in &self.layers {
            hidden = layer.attention.forward(&hidden, &mask, train);
            hidden = layer.feed_forward.forward(&hidden, train);
        }
        let cls = hidden.select(1, 0);
        let pooled_output = apply_linear(&cls, &self.pooler).tanh();
        BertOutput {
            last_hidden_state: hidden,
            pooled_output,
        }
    }
}

fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.389_531_389_251_535e38,
        Kind::Half => -65504.0,
        _ => f32::MIN as f64,
    }
}

/// HF `SequenceClassifierOutput`.
#[derive(Debug)]
pub struct SequenceClassifierOutput {
    /// `[batch, num_labels]`, fp32.
    pub logits: Tensor,
    /// Mean cross-entropy (classification) or MSE (num_labels == 1), when labels were given.
    pub loss: Option<Tensor>,
    pub pooled_output: Tensor,
    pub last_hidden_state: Tensor,
}

/// HF `BertForSequenceClassification`: BERT, dropout, linear head over the pooled output.
#[derive(Debug)]
pub struct SequenceClassifier {
    pub bert: BertModel,
    classifier: nn::Linear,
    dropout: f64,
    num_labels: i64,
}

impl SequenceClassifier {
    pub fn load(p: &nn::Path, cfg: &BertConfig) -> Self {
        let num_labels = cfg.labels() as i64;
        SequenceClassifier {
            bert: BertModel::load(p / "bert", cfg),
            classifier: linear(p / "classifier", cfg, cfg.hidden_size, num_labels),
            dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
            num_labels,
        }
    }

    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// `labels`: int64 class indices, or float scores when num_labels == 1 (HF's rule).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> SequenceClassifierOutput {
        let out = self
            .bert
            .forward(input_ids, token_type_ids, attention_mask, train);
        let logits = apply_linear(
            &out.pooled_output.dropout(self.dropout, train),
            &self.classifier,
        )
        .to_kind(Kind::Float);
        let loss = labels.map(|labels| {
            if self.num_labels == 1 {
                (logits.squeeze_dim(-1) - labels.to_kind(Kind::Float))
                    .square()
                    .mean(Kind::Float)
            } else {
                logits.cross_entropy_for_logits(labels)
            }
        });
        SequenceClassifierOutput {
            logits,
            loss,
            pooled_output: out.pooled_output,
            last_hidden_state: out.last_hidden_state,
        }
    }
}
