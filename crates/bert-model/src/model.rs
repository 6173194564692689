//! BERT in tch, block for block as HF `transformers/models/bert/modeling_bert.py`,
//! and the encoders that share its shape: DistilBERT (`modeling_distilbert.py`: other
//! parameter names, no token types, no pooler), RoBERTa (`modeling_roberta.py`) and
//! DeBERTa-v2/v3 (`modeling_deberta_v2.py`: disentangled relative-position attention).
//! Parameter paths equal HF's state-dict keys, so one save is loadable by both.

use std::sync::{PoisonError, RwLock};

use tch::nn::{self, Init};
use tch::{Device, Kind, Reduction, TchError, Tensor};

use crate::config::{Architecture, BertConfig, DebertaOptions, HiddenAct};
use crate::dropout::dropout;
use crate::relative_position::{relative_positions, RelativeIndex};
use crate::Result;

/// Every op below is tch's fallible `f_*` form: a libtorch failure (out of memory, an
/// index past the embedding table) comes back as an error, not as a panic.
type TchResult<T> = std::result::Result<T, TchError>;

/// fp32 master weights always; `Bf16` runs the forward under libtorch's own
/// `torch.autocast(device, dtype=torch.bfloat16)`, as HF Trainer's `bf16=True` does:
/// matmuls and attention in bfloat16; the residual stream, LayerNorm and the loss in fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Bf16,
}

/// How the encoder treats padding. Both give the same outputs at real tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Embeddings, linear layers, LayerNorm, GELU and dropout run over the real tokens
    /// only (`[total_tokens, hidden]`); attention pads them back to `[batch, seq]`
    /// around the softmax (unpad/repad, as MosaicBERT and ModernBERT do).
    #[default]
    PaddingFree,
    /// HF's layout: every op runs over `[batch, seq, hidden]`, padding included.
    Padded,
}

/// Which tokens the last encoder layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastLayer {
    /// Every token, as HF does: `last_hidden_state` is `[batch, seq, hidden]`.
    #[default]
    AllTokens,
    /// The first token only, the one the pooler and every classification head read:
    /// keys and values still come from every token, but the query, attention output,
    /// LayerNorm and feed-forward run over one row per sequence (in a 6-layer model,
    /// ~14% of the encoder's work skipped, forward and backward). Logits, loss and
    /// gradients are those of [`LastLayer::AllTokens`]; `last_hidden_state` is
    /// `[batch, 1, hidden]`.
    FirstToken,
}

/// HF `BertPreTrainedModel._init_weights`: `weight.normal_(0, initializer_range)`,
/// in place on a zero-initialized variable. tch's `Init::Randn` draws the same
/// numbers but as `randn * std + mean`, two temporaries the size of each weight that
/// the heap keeps after they are freed (~100 MB of RSS for the MiniLM model).
fn init_normal_(weight: &Tensor, cfg: &BertConfig) {
    tch::no_grad(|| {
        let _ = weight.shallow_clone().normal_(0.0, cfg.initializer_range);
    });
}

/// An `[n, hidden_size]` embedding table, initialized as HF does.
fn embedding(p: nn::Path, n: i64, cfg: &BertConfig) -> nn::Embedding {
    let table = nn::embedding(
        p,
        n,
        cfg.hidden_size,
        nn::EmbeddingConfig {
            ws_init: Init::Const(0.0),
            ..Default::default()
        },
    );
    init_normal_(&table.ws, cfg);
    table
}

/// A linear layer, with a LoRA adapter when the config targets it (PEFT `lora.Linear`).
#[derive(Debug)]
struct Projection {
    linear: nn::Linear,
    lora: Option<LoraLayer>,
    /// The weight in oneDNN's layout, while an [`InferenceWeights`] guard lives.
    packed: RwLock<Option<torch_shim::PackedWeight>>,
    /// bf16 weight and bias that training's forward uses under autocast, while
    /// attached ([`SequenceClassifier::attach_bf16_copies`]).
    bf16: RwLock<Option<Bf16Linear>>,
}

#[derive(Debug)]
struct Bf16Linear {
    ws: Tensor,
    bs: Option<Tensor>,
}

/// The row count oneDNN is told to expect when it lays out a packed weight (as
/// torch.compile's freezing pass passes its example input's). Without one it chose, on
/// an Intel Xeon (AVX-512, AMX), a transposed plain layout and its gemm-based kernel
/// for the FFN's `[4h, h]` weight, which applies GELU in a pass of its own over the
/// output; told ~512 rows, the blocked layout and the brgemm kernel that applies it
/// as it stores: 128-131 -> 170-173 GFLOP/s single-threaded at 200-600 rows (a
/// padding-free MRPC batch of 8), 108 -> 129 at 64; the other shapes within noise,
/// bf16 too.
const PACKING_ROWS: i64 = 512;

impl Projection {
    fn pack(&self, kind: Kind) -> TchResult<()> {
        let packed = torch_shim::PackedWeight::new(&self.linear.ws, kind, PACKING_ROWS)
            .map_err(|e| TchError::Torch(e.to_string()))?;
        *self.packed.write().unwrap_or_else(PoisonError::into_inner) = packed;
        Ok(())
    }

    fn unpack(&self) {
        *self.packed.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Leaf bf16 copies of the trainable weight and bias, equal to autocast's casts.
    fn attach_bf16(&self) -> TchResult<Vec<Bf16Copy>> {
        let copy = |master: &Tensor| -> TchResult<Option<Bf16Copy>> {
            if !master.requires_grad() {
                return Ok(None);
            }
            let copy = tch::no_grad(|| master.f_to_kind(Kind::BFloat16))?
                .f_contiguous()?
                .set_requires_grad(true);
            Ok(Some(Bf16Copy {
                master: master.shallow_clone(),
                copy,
            }))
        };
        let ws = copy(&self.linear.ws)?;
        let bs = self.linear.bs.as_ref().map(copy).transpose()?.flatten();
        let Some(ws) = ws else {
            // A frozen weight (LoRA's base) stays fp32: autocast casts it per forward.
            return Ok(Vec::new());
        };
        *self.bf16.write().unwrap_or_else(PoisonError::into_inner) = Some(Bf16Linear {
            ws: ws.copy.shallow_clone(),
            bs: bs.as_ref().map(|b| b.copy.shallow_clone()),
        });
        Ok(std::iter::once(ws).chain(bs).collect())
    }

    fn detach_bf16(&self) {
        *self.bf16.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A trainable fp32 weight (`master`) and the bf16 leaf (`copy`) that training's
/// forward multiplies with in its place under autocast; see
/// [`SequenceClassifier::attach_bf16_copies`].
#[derive(Debug)]
pub struct Bf16Copy {
    pub master: Tensor,
    pub copy: Tensor,
}

#[derive(Debug)]
struct LoraLayer {
    a: Tensor,
    b: Tensor,
    scaling: f64,
    dropout: f64,
}

fn linear(p: nn::Path, cfg: &BertConfig, input: i64, output: i64) -> Projection {
    let module = p.components().collect::<Vec<_>>().join(".");
    let lora = cfg.lora.as_ref().filter(|l| l.targets(&module)).map(|l| {
        // PEFT `reset_lora_parameters`: A kaiming-uniform (a = sqrt(5), i.e. bound
        // 1/sqrt(in)), B zeros, so a fresh adapter changes nothing.
        let bound = 1.0 / (input as f64).sqrt();
        LoraLayer {
            a: (&p / "lora_A").var(
                "weight",
                &[l.r, input],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            b: (&p / "lora_B").var("weight", &[output, l.r], Init::Const(0.0)),
            scaling: l.scaling(),
            dropout: l.lora_dropout,
        }
    });
    let linear = nn::linear(
        p,
        input,
        output,
        nn::LinearConfig {
            ws_init: Init::Const(0.0),
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    );
    init_normal_(&linear.ws, cfg);
    Projection {
        linear,
        lora,
        packed: RwLock::new(None),
        bf16: RwLock::new(None),
    }
}

/// `x @ W^T + b` (plus PEFT's `lora_B(lora_A(dropout(x))) * scaling`); under autocast
/// `linear` itself casts to the compute dtype. Out of training, an fp32 CPU linear
/// that records no gradient goes through oneDNN's matmul (`linear_inference`).
fn apply_linear(x: &Tensor, l: &Projection, train: bool) -> TchResult<Tensor> {
    apply_linear_then(x, l, train, None)
}

/// [`apply_linear`], then `act`. Out of training, without adapters, the activation is
/// the matmul's post-op: oneDNN applies it as it writes the output, where a pass of
/// its own over the FFN's `[tokens, 4 * hidden]` took ~2% of an fp32 MRPC evaluation.
fn apply_linear_then(
    x: &Tensor,
    l: &Projection,
    train: bool,
    act: Option<HiddenAct>,
) -> TchResult<Tensor> {
    // PEFT adds the adapters' term before the activation.
    let fused = !train && l.lora.is_none();
    let y = if train {
        let copy = l.bf16.read().unwrap_or_else(PoisonError::into_inner);
        match copy.as_ref() {
            // The copies are what autocast would cast the weights to; out of autocast
            // the fp32 weights.
            Some(c) if torch_shim::autocast_enabled(x.device()) => {
                x.f_linear(&c.ws, c.bs.as_ref())?
            }
            _ => x.f_linear(&l.linear.ws, l.linear.bs.as_ref())?,
        }
    } else {
        let post = match act {
            Some(act) if fused => post_op(act),
            _ => torch_shim::Activation::None,
        };
        let packed = l.packed.read().unwrap_or_else(PoisonError::into_inner);
        torch_shim::linear_inference(x, &l.linear.ws, packed.as_ref(), l.linear.bs.as_ref(), post)
            .map_err(|e| TchError::Torch(e.to_string()))?
    };
    let y = match &l.lora {
        None => y,
        Some(lora) => {
            let delta = dropout(x, lora.dropout, train)?
                .f_linear::<Tensor>(&lora.a, None)?
                .f_linear::<Tensor>(&lora.b, None)?
                .f_mul(&scalar(lora.scaling))?;
            y.f_add(&delta)?
        }
    };
    match act {
        Some(act) if !fused => activation(&y, act),
        _ => Ok(y),
    }
}

fn apply_layer_norm(x: &Tensor, ln: &nn::LayerNorm, eps: f64) -> TchResult<Tensor> {
    let dim = ln.ws.as_ref().map(|w| w.size()).unwrap_or_default();
    x.f_layer_norm(&dim, ln.ws.as_ref(), ln.bs.as_ref(), eps, true)
}

/// A 0-dim CPU tensor standing in for a scalar operand (ATen treats it as a scalar on
/// any device). tch's `f_*` ops that take a `Scalar` still panic when libtorch fails:
/// their temporary `Scalar` is dropped while the error is pending, and its `Drop`
/// unwraps it. So the fallible forward never passes one.
fn scalar<T: tch::kind::Element>(value: T) -> Tensor {
    Tensor::from(value)
}

/// `nn::Embedding`'s lookup with its default config (no padding index, dense grads).
fn apply_embedding(ids: &Tensor, e: &nn::Embedding) -> TchResult<Tensor> {
    Tensor::f_embedding(&e.ws, ids, -1, false, false)
}

/// Where the tokens the padding-free encoder computes sit in a `[batch, seq]` batch:
/// every real token, plus column 0 of each row (the pooler reads it, HF computes it
/// even when it is padding), so the outputs equal the padded layout's for any mask.
/// On CUDA the row count is rounded up with dummy rows (computed, then dropped): the
/// GEMMs then see a few shapes instead of a new one nearly every batch, and each new
/// shape costs kernel selection and loading on first use (bf16 warm-up on an H200:
/// ~17 s over the first 150 steps without this).
struct Packing {
    /// Flat positions `row * seq + col`, row-major: `[real]`.
    index: Tensor,
    /// For each flat position, the packed row attention reads there: its own token's,
    /// or at padding its sequence's first token's (masked, so never read): `[batch * seq]`.
    spread: Tensor,
    /// Position of each row's column 0 in the packed order: `[batch]`.
    first: Tensor,
    batch: i64,
    seq: i64,
    /// Rows that are tokens, and rows computed (tokens, then dummies).
    real: i64,
    rows: i64,
}

/// Dummy-row rounding of the packed row count (1 = none). Every new row count is a
/// new matmul shape: cuBLAS picks kernels per shape on CUDA, and oneDNN JIT-compiles a
/// bf16 matmul per shape on CPU, and an fp32 one out of training, where fp32 linears
/// go to oneDNN too (`linear_inference`; training's fp32 goes to MKL, which compiles
/// nothing; rounding evaluation's rows to 16: -45 MB RSS on an MRPC evaluation). MRPC
/// batches have hundreds of distinct token counts, more than oneDNN's primitive cache
/// (1024) holds for a model's dozen matmul shapes per step: without rounding a bf16 run
/// recompiled ~16 kernels a step and its RSS grew by 0.5 GiB (300 steps on an AMD
/// EPYC with AVX512-BF16: 48.8 s and 1.35 GB unrounded, 45.0 s and 0.80 GB at 16).
fn default_row_multiple(device: Device, precision: Precision, train: bool) -> i64 {
    match (device, precision) {
        (Device::Cuda(_), _) => 64,
        (Device::Cpu, Precision::Bf16) => 16,
        (Device::Cpu, Precision::Fp32) if !train => 16,
        _ => 1,
    }
}

impl Packing {
    fn from_mask(attention_mask: &Tensor, multiple: i64) -> TchResult<Packing> {
        let (batch, seq) = attention_mask.size2()?;
        let device = attention_mask.device();
        let first_column = Tensor::f_arange(seq, (Kind::Int64, device))?
            .f_eq_tensor(&scalar(0i64))?
            .f_unsqueeze(0)?;
        let keep = attention_mask
            .f_ne_tensor(&scalar(0i64))?
            .f_logical_or(&first_column)?;
        let per_row = keep.f_sum_dim_intlist(1, false, Kind::Int64)?;
        let first = per_row.f_cumsum(0, Kind::Int64)?.f_sub(&per_row)?;
        let flat = keep.f_flatten(0, -1)?;
        let index = flat.f_nonzero()?.f_squeeze_dim(1)?;
        let real = index.size()[0];
        let spread = flat
            .f_cumsum(0, Kind::Int64)?
            .f_sub(&scalar(1i64))?
            .f_where_self(
                &flat,
                &first
                    .f_unsqueeze(1)?
                    .f_expand([batch, seq], false)?
                    .f_flatten(0, -1)?,
            )?;
        Ok(Packing {
            index,
            spread,
            first,
            batch,
            seq,
            real,
            rows: (real + multiple - 1) / multiple * multiple,
        })
    }

    /// `[rows, ...]` -> `[batch * seq, ...]`, zeros where nothing was computed.
    fn pad(&self, x: &Tensor) -> TchResult<Tensor> {
        let mut shape = x.size();
        shape[0] = self.batch * self.seq;
        Tensor::f_zeros(&shape, (x.kind(), x.device()))?.f_index_copy(
            0,
            &self.index,
            &x.f_narrow(0, 0, self.real)?,
        )
    }

    /// `[rows, ...]` -> `[batch * seq, ...]` for attention, whose mask hides padding:
    /// a gather (one copy) where [`Packing::pad`] zero-fills and scatters, which on CPU
    /// is ~10x slower (~250 vs ~25 us for an MRPC batch of q, k or v). Padding positions
    /// get their own sequence's first row, so nothing crosses between sequences; the
    /// mask turns them into exact zeros in the softmax, so outputs and gradients are
    /// those of zero padding, bit for bit.
    /// In training the backward gathers the tokens' gradients
    /// ([`torch_shim::spread_rows`]) where index_select's zero-fills and scatters on one
    /// thread (~1.5 ms of a ~100 ms bf16 MiniLM step on a 2-core Xeon): the padding
    /// positions' gradients are zeros, since the mask gives them probability 0.
    fn spread(&self, x: &Tensor) -> TchResult<Tensor> {
        if x.requires_grad() {
            return torch_shim::spread_rows(x, &self.spread, &self.index)
                .map_err(|e| TchError::Torch(e.to_string()));
        }
        x.f_index_select(0, &self.spread)
    }

    /// `[batch * seq, ...]` -> `[rows, ...]` (dummy rows are zeros).
    fn unpad(&self, x: &Tensor) -> TchResult<Tensor> {
        let tokens = x.f_index_select(0, &self.index)?;
        if self.rows == self.real {
            return Ok(tokens);
        }
        let mut shape = tokens.size();
        shape[0] = self.rows - self.real;
        Tensor::f_cat(
            &[tokens, Tensor::f_zeros(&shape, (x.kind(), x.device()))?],
            0,
        )
    }
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

/// HF `BertEmbeddings`: word + position + token type, LayerNorm, dropout
/// (DistilBERT's `Embeddings`: no token types; `DebertaV2Embeddings`: positions only
/// with `position_biased_input`, token types only with `type_vocab_size > 0`, the
/// output multiplied by the attention mask).
#[derive(Debug)]
struct Embeddings {
    word: nn::Embedding,
    position: Option<nn::Embedding>,
    token_type: Option<nn::Embedding>,
    layer_norm: nn::LayerNorm,
    dropout: f64,
    eps: f64,
    /// DeBERTa adds positions before token types.
    deberta: bool,
    /// The word embeddings' gradient as the looked-up rows (`nn.Embedding(sparse=True)`).
    sparse_word_gradient: bool,
}

impl Embeddings {
    fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        let emb = |name: &str, n: i64| embedding(&p / name, n, cfg);
        let positions = cfg.deberta.as_ref().is_none_or(|d| d.position_biased_input);
        let token_types = match cfg.architecture {
            Architecture::DistilBert => false,
            Architecture::DebertaV2 => cfg.type_vocab_size > 0,
            Architecture::Bert | Architecture::Roberta => true,
        };
        Embeddings {
            word: emb("word_embeddings", cfg.vocab_size),
            position: positions.then(|| emb("position_embeddings", cfg.max_position_embeddings)),
            token_type: token_types.then(|| emb("token_type_embeddings", cfg.type_vocab_size)),
            layer_norm: layer_norm(&p / "LayerNorm", cfg),
            dropout: cfg.hidden_dropout_prob,
            eps: cfg.layer_norm_eps,
            deberta: cfg.architecture == Architecture::DebertaV2,
            sparse_word_gradient: false,
        }
    }

    /// Any layout: `position_ids` and `attention_mask` have (or broadcast to) the
    /// shape of `input_ids`.
    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> TchResult<Tensor> {
        // HF's order (BERT: `inputs_embeds + token_type_embeddings`, then `+= position`;
        // DeBERTa: positions first): fp32 addition is not associative, and bf16
        // autocast magnifies the last bit.
        let mut sum = if self.sparse_word_gradient {
            Tensor::f_embedding(&self.word.ws, input_ids, -1, false, true)?
        } else {
            apply_embedding(input_ids, &self.word)?
        };
        let position = match &self.position {
            Some(position) => Some(apply_embedding(position_ids, position)?),
            None => None,
        };
        if let (true, Some(position)) = (self.deberta, &position) {
            sum = sum.f_add(position)?;
        }
        if let Some(token_type) = &self.token_type {
            sum = sum.f_add(&apply_embedding(token_type_ids, token_type)?)?;
        }
        if let (false, Some(position)) = (self.deberta, &position) {
            sum = sum.f_add(position)?;
        }
        let mut out = apply_layer_norm(&sum, &self.layer_norm, self.eps)?;
        if self.deberta {
            let mask = attention_mask.f_to_kind(out.kind())?.f_unsqueeze(-1)?;
            out = out.f_mul(&mask)?;
        }
        dropout(&out, self.dropout, train)
    }
}

/// HF `BertSdpaSelfAttention` + `BertSelfOutput` (post-LN residual); DistilBERT's
/// `DistilBertSelfAttention` + `sa_layer_norm`, which has no dropout after `out_lin`;
/// DeBERTa's `DisentangledSelfAttention` + `DebertaV2SelfOutput`.
#[derive(Debug)]
struct Attention {
    query: Projection,
    key: Projection,
    value: Projection,
    output: Projection,
    layer_norm: nn::LayerNorm,
    heads: i64,
    head_dim: i64,
    attention_dropout: f64,
    hidden_dropout: f64,
    eps: f64,
    disentangled: Option<Disentangled>,
}

/// DeBERTa's `DisentangledSelfAttention` settings: scores scaled by
/// `sqrt(head_dim * scale_factor)`, plus content-to-position and position-to-content
/// terms read from the shared relative embeddings.
#[derive(Debug)]
struct Disentangled {
    /// 1 + one per entry of `pos_att_type`.
    scale_factor: i64,
    /// `None` without `relative_attention`.
    relative: Option<RelativeTerms>,
}

#[derive(Debug)]
struct RelativeTerms {
    c2p: bool,
    p2c: bool,
    /// `pos_key_proj` / `pos_query_proj`; `None` with `share_att_key` (the content
    /// projections are used).
    pos_key: Option<Projection>,
    pos_query: Option<Projection>,
    /// `pos_dropout` over the relative embeddings.
    dropout: f64,
}

/// What every layer's disentangled attention reads: the (normalized) relative
/// embeddings, `[2 * span, hidden]`, and the rows each query/key pair gathers.
struct RelativeContext {
    embeddings: Tensor,
    index: RelativeIndex,
}

impl Attention {
    fn projections(&self) -> impl Iterator<Item = &Projection> {
        let relative = self
            .disentangled
            .as_ref()
            .and_then(|d| d.relative.as_ref())
            .into_iter()
            .flat_map(|r| r.pos_key.iter().chain(r.pos_query.iter()));
        [&self.query, &self.key, &self.value, &self.output]
            .into_iter()
            .chain(relative)
    }

    /// `layer`: the path of one encoder layer.
    fn load(layer: &nn::Path, cfg: &BertConfig) -> Self {
        let h = cfg.hidden_size;
        let a = layer / "attention";
        let (query, key, value, output, norm, hidden_dropout) = match cfg.architecture {
            Architecture::Bert | Architecture::Roberta => (
                &a / "self" / "query",
                &a / "self" / "key",
                &a / "self" / "value",
                &a / "output" / "dense",
                &a / "output" / "LayerNorm",
                cfg.hidden_dropout_prob,
            ),
            Architecture::DistilBert => (
                &a / "q_lin",
                &a / "k_lin",
                &a / "v_lin",
                &a / "out_lin",
                layer / "sa_layer_norm",
                0.0,
            ),
            Architecture::DebertaV2 => (
                &a / "self" / "query_proj",
                &a / "self" / "key_proj",
                &a / "self" / "value_proj",
                &a / "output" / "dense",
                &a / "output" / "LayerNorm",
                cfg.hidden_dropout_prob,
            ),
        };
        let disentangled = cfg.deberta.as_ref().map(|d| {
            let relative = d.relative_attention.then(|| {
                let separate = |name: &str, used: bool| {
                    (used && !d.share_att_key).then(|| linear(&a / "self" / name, cfg, h, h))
                };
                RelativeTerms {
                    c2p: d.c2p(),
                    p2c: d.p2c(),
                    pos_key: separate("pos_key_proj", d.c2p()),
                    pos_query: separate("pos_query_proj", d.p2c()),
                    dropout: cfg.hidden_dropout_prob,
                }
            });
            Disentangled {
                scale_factor: 1 + i64::from(d.c2p()) + i64::from(d.p2c()),
                relative,
            }
        });
        Attention {
            query: linear(query, cfg, h, h),
            key: linear(key, cfg, h, h),
            value: linear(value, cfg, h, h),
            output: linear(output, cfg, h, h),
            layer_norm: layer_norm(norm, cfg),
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout,
            eps: cfg.layer_norm_eps,
            disentangled,
        }
    }

    /// `hidden`: `[batch, seq, hidden]`, or `[total, hidden]` with `packing`;
    /// `relative`: DeBERTa's relative embeddings and indices. With `first_only`, the
    /// output is the first token's only (`[batch, 1, hidden]`, packed `[batch, hidden]`):
    /// keys and values still come from every token.
    fn forward(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        packing: Option<&Packing>,
        relative: Option<&RelativeContext>,
        train: bool,
        first_only: bool,
    ) -> TchResult<Tensor> {
        let (b, s) = match packing {
            Some(p) => (p.batch, p.seq),
            None => {
                let size = hidden.size();
                (size[0], size[1])
            }
        };
        let h = self.heads * self.head_dim;
        // [batch, heads, seq, head_dim], padding put back where attention needs it.
        let heads = |x: Tensor| -> TchResult<Tensor> {
            let x = match packing {
                Some(p) => p.spread(&x)?,
                None => x,
            };
            x.f_view([b, s, self.heads, self.head_dim])?
                .f_transpose(1, 2)
        };
        let first = |x: &Tensor| match packing {
            Some(p) => x.f_index_select(0, &p.first),
            None => x.f_narrow(1, 0, 1),
        };
        // DeBERTa's relative terms gather over every query row: it computes them all
        // and keeps the first afterwards.
        let query_rows = first_only && self.disentangled.is_none();
        let q = if query_rows {
            apply_linear(&first(hidden)?, &self.query, train)?
                .f_view([b, 1, self.heads, self.head_dim])?
                .f_transpose(1, 2)?
        } else {
            heads(apply_linear(hidden, &self.query, train)?)?
        };
        let k = heads(apply_linear(hidden, &self.key, train)?)?;
        let v = heads(apply_linear(hidden, &self.value, train)?)?;
        let p = if train { self.attention_dropout } else { 0.0 };
        let context = if let Some(disentangled) = &self.disentangled {
            self.disentangled_attention(disentangled, &q, &k, &v, mask, relative, train)?
        } else if p > 0.0 && q.device() == Device::Cpu && q.kind() == Kind::Float {
            self.math_attention(&q, &k, &v, mask, p)?
        } else if p > 0.0 && q.device() == Device::Cpu && q.kind() == Kind::BFloat16 {
            // Under bf16 autocast SDPA's math path (the one dropout takes on CPU) widens
            // q, k and v to fp32 and narrows the output back; likewise here, with
            // autocast off so the fp32 matmuls stay fp32.
            let wide = |x: &Tensor| x.f_to_kind(Kind::Float);
            torch_shim::without_autocast(Device::Cpu, || {
                self.math_attention(&wide(&q)?, &wide(&k)?, &wide(&v)?, &wide(mask)?, p)?
                    .f_to_kind(Kind::BFloat16)
            })
            .map_err(|e| TchError::Torch(e.to_string()))??
        } else {
            attention(&q, &k, &v, mask, p)?
        }
        .f_transpose(1, 2)?
        .f_contiguous()?;
        let (context, residual) = if first_only {
            // [batch, 1, heads, head_dim] -> the first token's rows.
            let context = if query_rows {
                context
            } else {
                context.f_narrow(1, 0, 1)?
            };
            let shape: &[i64] = if packing.is_some() {
                &[b, h]
            } else {
                &[b, 1, h]
            };
            (context.f_reshape(shape)?, first(hidden)?)
        } else {
            let context = match packing {
                Some(p) => p.unpad(&context.f_view([b * s, h])?)?,
                None => context.f_view([b, s, h])?,
            };
            (context, hidden.shallow_clone())
        };
        let out = dropout(
            &apply_linear(&context, &self.output, train)?,
            self.hidden_dropout,
            train,
        )?;
        apply_layer_norm(&out.f_add(&residual)?, &self.layer_norm, self.eps)
    }

    /// What SDPA's math path does on CPU when dropout is on, written out so the
    /// probabilities get our CPU dropout (see dropout.rs).
    fn math_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        p: f64,
    ) -> TchResult<Tensor> {
        let scores = q
            .f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul(&scalar((self.head_dim as f64).powf(-0.5)))?
            .f_add(mask)?;
        dropout(&scores.f_softmax(-1, Kind::Float)?, p, true)?.f_matmul(v)
    }

    /// HF `DisentangledSelfAttention.forward` and `disentangled_attention_bias` over
    /// `[batch, heads, seq, head_dim]`: content scores plus c2p and p2c terms, each
    /// divided by `sqrt(head_dim * scale_factor)`; the mask, softmax, dropout, `@ v`.
    #[allow(clippy::too_many_arguments)]
    fn disentangled_attention(
        &self,
        d: &Disentangled,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        relative: Option<&RelativeContext>,
        train: bool,
    ) -> TchResult<Tensor> {
        // `scaled_size_sqrt`: sqrt of a float32 tensor, cast to the scores' dtype.
        let scale = Tensor::from((self.head_dim * d.scale_factor) as f32).f_sqrt()?;
        let mut scores = q.f_matmul(&k.f_transpose(-1, -2)?.f_div(&scale)?)?;
        if let (Some(terms), Some(context)) = (&d.relative, relative) {
            let rows = dropout(&context.embeddings, terms.dropout, train)?;
            // [2 * span, hidden] -> [heads, 2 * span, head_dim]
            let project = |l: &Projection| -> TchResult<Tensor> {
                apply_linear(&rows, l, train)?
                    .f_view([-1, self.heads, self.head_dim])?
                    .f_transpose(0, 1)
            };
            let (b, h, s, _) = q.size4()?;
            let mut bias: Option<Tensor> = None;
            if terms.c2p {
                let pos_key = project(terms.pos_key.as_ref().unwrap_or(&self.key))?;
                let c2p = q
                    .f_matmul(&pos_key.f_transpose(-1, -2)?)?
                    .f_gather(-1, &context.index.c2p.f_expand([b, h, s, s], false)?, false)?
                    .f_div(&scale)?;
                bias = Some(c2p);
            }
            if terms.p2c {
                let pos_query = project(terms.pos_query.as_ref().unwrap_or(&self.query))?;
                let p2c = k
                    .f_matmul(&pos_query.f_transpose(-1, -2)?)?
                    .f_gather(-1, &context.index.p2c.f_expand([b, h, s, s], false)?, false)?
                    .f_transpose(-1, -2)?
                    .f_div(&scale)?;
                bias = Some(match bias {
                    Some(c2p) => c2p.f_add(&p2c)?,
                    None => p2c,
                });
            }
            if let Some(bias) = bias {
                scores = scores.f_add(&bias)?;
            }
        }
        let probs = scores.f_add(mask)?.f_softmax(-1, Kind::Float)?;
        dropout(&probs, self.attention_dropout, train)?.f_matmul(v)
    }
}

/// `F.scaled_dot_product_attention(q, k, v, mask, p)`, without cuDNN's kernel on CUDA.
/// torch 2.11 ranks cuDNN attention first for bf16 on Hopper/Blackwell, and cuDNN
/// builds an execution plan for every new sequence length, tens of ms each: a bf16
/// bert-base run on an H200 spent most of its first 150 steps there (HF Trainer too).
/// The memory-efficient kernel it falls back to has no per-shape cost. The switch is
/// global, so it is restored after the call; GLUE_RS_CUDNN_ATTENTION=1 keeps cuDNN.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, p: f64) -> TchResult<Tensor> {
    static KEEP_CUDNN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let keep = *KEEP_CUDNN
        .get_or_init(|| std::env::var("GLUE_RS_CUDNN_ATTENTION").is_ok_and(|v| v == "1"));
    let sdpa =
        || Tensor::f_scaled_dot_product_attention(q, k, v, Some(mask), p, false, None, false);
    if keep || !q.device().is_cuda() || !torch_shim::cudnn_attention() {
        return sdpa();
    }
    // Both calls only store a flag; they cannot fail.
    let _ = torch_shim::set_cudnn_attention(false);
    let out = sdpa();
    let _ = torch_shim::set_cudnn_attention(true);
    out
}

/// HF `BertIntermediate` + `BertOutput`: dense, activation, dense, post-LN residual
/// (DistilBERT's `FFN` + `output_layer_norm`).
#[derive(Debug)]
struct FeedForward {
    intermediate: Projection,
    output: Projection,
    layer_norm: nn::LayerNorm,
    act: HiddenAct,
    dropout: f64,
    eps: f64,
}

impl FeedForward {
    /// `layer`: the path of one encoder layer.
    fn load(layer: &nn::Path, cfg: &BertConfig) -> Self {
        let (intermediate, output, norm) = match cfg.architecture {
            Architecture::Bert | Architecture::Roberta | Architecture::DebertaV2 => (
                layer / "intermediate" / "dense",
                layer / "output" / "dense",
                layer / "output" / "LayerNorm",
            ),
            Architecture::DistilBert => (
                layer / "ffn" / "lin1",
                layer / "ffn" / "lin2",
                layer / "output_layer_norm",
            ),
        };
        FeedForward {
            intermediate: linear(intermediate, cfg, cfg.hidden_size, cfg.intermediate_size),
            output: linear(output, cfg, cfg.intermediate_size, cfg.hidden_size),
            layer_norm: layer_norm(norm, cfg),
            act: cfg.hidden_act,
            dropout: cfg.hidden_dropout_prob,
            eps: cfg.layer_norm_eps,
        }
    }

    fn projections(&self) -> impl Iterator<Item = &Projection> {
        [&self.intermediate, &self.output].into_iter()
    }

    fn forward(&self, x: &Tensor, train: bool) -> TchResult<Tensor> {
        let y = apply_linear_then(x, &self.intermediate, train, Some(self.act))?;
        let y = dropout(&apply_linear(&y, &self.output, train)?, self.dropout, train)?;
        apply_layer_norm(&y.f_add(x)?, &self.layer_norm, self.eps)
    }
}

/// [`activation`] as a post-op of [`torch_shim::linear_inference`].
fn post_op(act: HiddenAct) -> torch_shim::Activation {
    match act {
        HiddenAct::Gelu => torch_shim::Activation::Gelu,
        HiddenAct::GeluNew => torch_shim::Activation::GeluTanh,
        HiddenAct::Relu => torch_shim::Activation::Relu,
    }
}

/// HF `ACT2FN[hidden_act]`.
fn activation(x: &Tensor, act: HiddenAct) -> TchResult<Tensor> {
    match act {
        HiddenAct::Gelu => x.f_gelu("none"),
        HiddenAct::GeluNew => x.f_gelu("tanh"),
        HiddenAct::Relu => x.f_relu(),
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
    /// `[batch, seq, hidden]`; `[batch, 1, hidden]` with [`LastLayer::FirstToken`].
    pub last_hidden_state: Tensor,
    /// BERT: the pooler's tanh over the first token; DistilBERT (no pooler): the first
    /// token's hidden state, as its classifier reads it (`hidden_state[:, 0]`).
    pub pooled_output: Tensor,
}

/// DeBERTa's `DebertaV2Encoder.rel_embeddings` (+ `LayerNorm` with `norm_rel_ebd`)
/// and how relative positions are bucketed.
#[derive(Debug)]
struct RelativeEmbeddings {
    table: nn::Embedding,
    layer_norm: Option<nn::LayerNorm>,
    eps: f64,
    buckets: i64,
    max_relative: i64,
    span: i64,
}

impl RelativeEmbeddings {
    fn load(encoder: &nn::Path, cfg: &BertConfig, d: &DebertaOptions) -> Self {
        let span = d.span(cfg);
        RelativeEmbeddings {
            table: embedding(encoder / "rel_embeddings", 2 * span, cfg),
            layer_norm: d
                .layer_norm_rel_embeddings()
                .then(|| layer_norm(encoder / "LayerNorm", cfg)),
            eps: cfg.layer_norm_eps,
            buckets: d.position_buckets,
            max_relative: d.max_relative(cfg),
            span,
        }
    }

    /// `get_rel_embedding` and `get_rel_pos` for a `seq`-token batch.
    fn context(&self, seq: i64) -> TchResult<RelativeContext> {
        let rows = self.table.ws.f_narrow(0, 0, 2 * self.span)?;
        let embeddings = match &self.layer_norm {
            Some(ln) => apply_layer_norm(&rows, ln, self.eps)?,
            None => rows,
        };
        let relative =
            relative_positions(seq, self.buckets, self.max_relative, embeddings.device())?;
        Ok(RelativeContext {
            embeddings,
            index: RelativeIndex::new(&relative, self.span)?,
        })
    }
}

/// HF `BertModel`: embeddings, encoder, pooler (tanh over [CLS]); or `DistilBertModel`,
/// `RobertaModel` (no pooler), `DebertaV2Model` (relative embeddings, no pooler).
#[derive(Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Projection>,
    relative: Option<RelativeEmbeddings>,
    precision: Precision,
    layout: Layout,
    last_layer: LastLayer,
    /// Packed-row rounding; `None`: the device's default (64 on CUDA, none on CPU).
    row_multiple: Option<i64>,
    /// Position id of the first token (RoBERTa: `pad_token_id + 1`).
    position_offset: i64,
}

impl BertModel {
    pub fn load(p: nn::Path, cfg: &BertConfig) -> Self {
        let encoder = match cfg.architecture {
            Architecture::Bert | Architecture::Roberta | Architecture::DebertaV2 => &p / "encoder",
            Architecture::DistilBert => &p / "transformer",
        };
        let relative = cfg
            .deberta
            .as_ref()
            .filter(|d| d.relative_attention)
            .map(|d| RelativeEmbeddings::load(&encoder, cfg, d));
        let encoder = &encoder / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = &encoder / i;
                Layer {
                    attention: Attention::load(&l, cfg),
                    feed_forward: FeedForward::load(&l, cfg),
                }
            })
            .collect();
        BertModel {
            embeddings: Embeddings::load(&p / "embeddings", cfg),
            layers,
            pooler: (cfg.architecture == Architecture::Bert).then(|| {
                linear(
                    &p / "pooler" / "dense",
                    cfg,
                    cfg.hidden_size,
                    cfg.hidden_size,
                )
            }),
            relative,
            precision: Precision::Fp32,
            layout: Layout::default(),
            last_layer: LastLayer::default(),
            row_multiple: None,
            position_offset: cfg.position_offset(),
        }
    }

    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = layout;
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn set_last_layer(&mut self, last_layer: LastLayer) {
        self.last_layer = last_layer;
    }

    /// The word embeddings' gradient as a sparse tensor of the looked-up rows
    /// (`nn.Embedding(sparse=True)`; duplicates not yet summed) rather than a dense
    /// `[vocab, hidden]` one: a batch touches a few hundred of 30522 rows, and the
    /// dense gradient costs a zero-fill, a scatter and then a full read in clipping and
    /// in AdamW (47 MB each for MiniLM). The values are the same. Off by default:
    /// whoever reads the gradient must take a sparse one (train-loop's AdamW does).
    pub fn set_sparse_word_gradient(&mut self, sparse: bool) {
        self.embeddings.sparse_word_gradient = sparse;
    }

    pub fn last_layer(&self) -> LastLayer {
        self.last_layer
    }

    fn projections(&self) -> impl Iterator<Item = &Projection> {
        self.layers
            .iter()
            .flat_map(|l| {
                l.attention
                    .projections()
                    .chain(l.feed_forward.projections())
            })
            .chain(self.pooler.iter())
    }

    /// Whether layer `i` computes the first token only.
    fn first_only(&self, i: usize) -> bool {
        self.last_layer == LastLayer::FirstToken && i + 1 == self.layers.len()
    }

    /// Forces the padding-free layout's row rounding (tests use it to run the CUDA
    /// rule on CPU).
    #[doc(hidden)]
    pub fn set_packed_row_multiple(&mut self, multiple: Option<i64>) {
        self.row_multiple = multiple;
    }

    /// `input_ids`, `token_type_ids`, `attention_mask`: int64 `[batch, seq]`, mask 1 = token.
    /// With [`Precision::Bf16`] this runs under autocast; call it inside your own
    /// autocast region to combine it with other ops.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<BertOutput> {
        let run = || match self.layout {
            Layout::PaddingFree => {
                self.forward_packed(input_ids, token_type_ids, attention_mask, train)
            }
            Layout::Padded => self.forward_padded(input_ids, token_type_ids, attention_mask, train),
        };
        Ok(match self.precision {
            Precision::Fp32 => run()?,
            Precision::Bf16 => torch_shim::autocast(input_ids.device(), Kind::BFloat16, run)??,
        })
    }

    /// Additive mask `[batch, 1, 1, seq]`: 0 where attended, fp32-min at padding, as
    /// HF's `_prepare_4d_attention_mask_for_sdpa` (autocast casts it with q, k, v).
    fn additive_mask(attention_mask: &Tensor) -> TchResult<Tensor> {
        attention_mask
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(1)?
            .f_unsqueeze(1)?
            .f_neg()?
            .f_add(&scalar(1f32))?
            .f_mul(&scalar(f32::MIN))
    }

    fn relative_context(&self, seq: i64) -> TchResult<Option<RelativeContext>> {
        self.relative.as_ref().map(|r| r.context(seq)).transpose()
    }

    /// HF `BertPooler` over the first token's hidden state; without a pooler, that state.
    fn pool(&self, first: Tensor, train: bool) -> TchResult<Tensor> {
        match &self.pooler {
            Some(pooler) => apply_linear(&first, pooler, train)?.f_tanh(),
            None => Ok(first),
        }
    }

    /// HF `BertModel.forward`, op for op.
    fn forward_padded(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> TchResult<BertOutput> {
        let (_, seq) = input_ids.size2()?;
        // RoBERTa numbers real tokens from padding_idx + 1 (HF counts them with a cumsum
        // over the padding mask; for right-padded rows that is the column plus the offset).
        let positions = Tensor::f_arange(seq, (Kind::Int64, input_ids.device()))?
            .f_add(&scalar(self.position_offset))?
            .f_unsqueeze(0)?;
        let mask = Self::additive_mask(attention_mask)?;
        let relative = self.relative_context(seq)?;
        let mut hidden = self.embeddings.forward(
            input_ids,
            token_type_ids,
            &positions,
            attention_mask,
            train,
        )?;
        for (i, layer) in self.layers.iter().enumerate() {
            hidden = layer.attention.forward(
                &hidden,
                &mask,
                None,
                relative.as_ref(),
                train,
                self.first_only(i),
            )?;
            hidden = layer.feed_forward.forward(&hidden, train)?;
        }
        let pooled_output = self.pool(hidden.f_select(1, 0)?, train)?;
        Ok(BertOutput {
            last_hidden_state: hidden,
            pooled_output,
        })
    }

    /// The same computation over `[total_tokens, hidden]`; see [`Layout::PaddingFree`].
    fn forward_packed(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> TchResult<BertOutput> {
        let multiple = self
            .row_multiple
            .unwrap_or_else(|| default_row_multiple(input_ids.device(), self.precision, train));
        let packing = Packing::from_mask(attention_mask, multiple)?;
        let mask = Self::additive_mask(attention_mask)?;
        let gather = |t: &Tensor| packing.unpad(&t.f_flatten(0, -1)?);
        let positions = gather(&Tensor::f_arange(
            packing.batch * packing.seq,
            (Kind::Int64, input_ids.device()),
        )?)?
        .f_remainder_tensor(&scalar(packing.seq))?
        .f_add(&scalar(self.position_offset))?;
        let relative = self.relative_context(packing.seq)?;
        let mut hidden = self.embeddings.forward(
            &gather(input_ids)?,
            &gather(token_type_ids)?,
            &positions,
            &gather(attention_mask)?,
            train,
        )?;
        for (i, layer) in self.layers.iter().enumerate() {
            hidden = layer.attention.forward(
                &hidden,
                &mask,
                Some(&packing),
                relative.as_ref(),
                train,
                self.first_only(i),
            )?;
            hidden = layer.feed_forward.forward(&hidden, train)?;
        }
        let hidden_size = hidden.size()[1];
        if self.first_only(self.layers.len() - 1) {
            return Ok(BertOutput {
                pooled_output: self.pool(hidden.shallow_clone(), train)?,
                last_hidden_state: hidden.f_view([packing.batch, 1, hidden_size])?,
            });
        }
        let pooled_output = self.pool(hidden.f_index_select(0, &packing.first)?, train)?;
        Ok(BertOutput {
            last_hidden_state: packing.pad(&hidden)?.f_view([
                packing.batch,
                packing.seq,
                hidden_size,
            ])?,
            pooled_output,
        })
    }
}

/// HF `SequenceClassifierOutput`.
#[derive(Debug)]
pub struct SequenceClassifierOutput {
    /// `[batch, num_labels]`, fp32 (under bf16: the bf16 logits, widened).
    pub logits: Tensor,
    /// Mean cross-entropy (classification) or MSE (num_labels == 1), when labels were given.
    pub loss: Option<Tensor>,
    pub pooled_output: Tensor,
    pub last_hidden_state: Tensor,
}

/// The classification heads over the first token (or BERT's pooled output).
#[derive(Debug)]
enum Head {
    /// `BertForSequenceClassification`: dropout, `classifier`.
    Linear { classifier: Projection },
    /// `DistilBertForSequenceClassification`: `pre_classifier`, ReLU, dropout, `classifier`.
    PreClassifier {
        pre_classifier: Projection,
        classifier: Projection,
    },
    /// `RobertaClassificationHead`: dropout, `classifier.dense`, tanh, dropout,
    /// `classifier.out_proj`.
    Roberta {
        dense: Projection,
        out_proj: Projection,
    },
    /// `DebertaV2ForSequenceClassification`: `ContextPooler` (dropout, `pooler.dense`,
    /// `pooler_hidden_act`), dropout, `classifier`.
    Deberta {
        pooler: Projection,
        pooler_dropout: f64,
        act: HiddenAct,
        classifier: Projection,
    },
}

impl Head {
    fn projections(&self) -> Vec<&Projection> {
        match self {
            Head::Linear { classifier } => vec![classifier],
            Head::PreClassifier {
                pre_classifier,
                classifier,
            } => vec![pre_classifier, classifier],
            Head::Roberta { dense, out_proj } => vec![dense, out_proj],
            Head::Deberta {
                pooler, classifier, ..
            } => vec![pooler, classifier],
        }
    }
}

/// The linear layers' packed weights; see [`SequenceClassifier::pack_for_inference`].
/// Dropping it returns the model to its plain weights.
#[derive(Debug)]
pub struct InferenceWeights<'a> {
    projections: Vec<&'a Projection>,
}

impl Drop for InferenceWeights<'_> {
    fn drop(&mut self) {
        for p in &self.projections {
            p.unpack();
        }
    }
}

/// HF `BertForSequenceClassification`, `DistilBertForSequenceClassification` or
/// `RobertaForSequenceClassification`: the encoder and its architecture's head.
#[derive(Debug)]
pub struct SequenceClassifier {
    /// The encoder (BERT, DistilBERT or RoBERTa).
    pub bert: BertModel,
    head: Head,
    dropout: f64,
    num_labels: i64,
}

impl SequenceClassifier {
    pub fn load(p: &nn::Path, cfg: &BertConfig) -> Self {
        let num_labels = cfg.labels() as i64;
        let h = cfg.hidden_size;
        let bert = BertModel::load(p / cfg.architecture.prefix(), cfg);
        let head = match cfg.architecture {
            Architecture::Bert => Head::Linear {
                classifier: linear(p / "classifier", cfg, h, num_labels),
            },
            Architecture::DistilBert => Head::PreClassifier {
                pre_classifier: linear(p / "pre_classifier", cfg, h, h),
                classifier: linear(p / "classifier", cfg, h, num_labels),
            },
            Architecture::Roberta => Head::Roberta {
                dense: linear(p / "classifier" / "dense", cfg, h, h),
                out_proj: linear(p / "classifier" / "out_proj", cfg, h, num_labels),
            },
            Architecture::DebertaV2 => {
                let d = cfg.deberta.as_ref();
                Head::Deberta {
                    pooler: linear(p / "pooler" / "dense", cfg, h, h),
                    pooler_dropout: d.map_or(0.0, |d| d.pooler_dropout),
                    act: d.map_or(HiddenAct::Gelu, |d| d.pooler_hidden_act),
                    classifier: linear(p / "classifier", cfg, h, num_labels),
                }
            }
        };
        let dropout = match &cfg.deberta {
            Some(d) => d.cls_dropout.unwrap_or(cfg.hidden_dropout_prob),
            None => cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        };
        SequenceClassifier {
            bert,
            head,
            dropout,
            num_labels,
        }
    }

    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// Every linear layer's weight reordered once into oneDNN's matmul layout for CPU
    /// inference ([`torch_shim::PackedWeight`]), until the guard drops: forwards with
    /// `train = false` and no gradient recorded then skip one reorder per linear layer
    /// and call (fp32: ~5% of an MRPC evaluation on an AVX-512 AMD EPYC), for the same
    /// results. Under [`Precision::Bf16`] the weights are cast to bf16 once and packed
    /// (on CPUs with bf16 arithmetic, where autocast's linears go to oneDNN), and the
    /// linears compute what autocast's do. The packed copies (as large as the linear
    /// weights, half in bf16) do not follow changes to the weights: drop the guard
    /// before the weights next change. Off the CPU it packs nothing.
    pub fn pack_for_inference(&self) -> Result<InferenceWeights<'_>> {
        let kind = match self.bert.precision {
            Precision::Fp32 => Some(Kind::Float),
            Precision::Bf16 => crate::device::cpu_has_bf16().then_some(Kind::BFloat16),
        };
        let projections: Vec<&Projection> = match kind {
            Some(_) => self
                .bert
                .projections()
                .chain(self.head.projections())
                .collect(),
            None => Vec::new(),
        };
        let guard = InferenceWeights { projections };
        if let Some(kind) = kind {
            tch::no_grad(|| guard.projections.iter().try_for_each(|p| p.pack(kind)))?;
        }
        Ok(guard)
    }

    /// Gives every trainable linear weight and bias a bf16 copy (a leaf that records
    /// its own gradient) that training's forward uses in its place under autocast,
    /// until [`SequenceClassifier::detach_bf16_copies`]. Autocast casts each fp32
    /// weight to bf16 at every forward and widens its bf16 gradient back to fp32 at
    /// every backward, two passes over the linear weights per step; with the copies
    /// neither runs. The values are the same: the copy is the cast, and the widened
    /// gradient the copy's gradient. Whoever changes a master weight refreshes its copy
    /// (`copy.copy_(master)`): train-loop's AdamW writes both in one pass.
    pub fn attach_bf16_copies(&self) -> Result<Vec<Bf16Copy>> {
        let mut out = Vec::new();
        for p in self.bert.projections().chain(self.head.projections()) {
            out.extend(p.attach_bf16()?);
        }
        Ok(out)
    }

    /// Back to autocast's per-forward casts of the fp32 weights.
    pub fn detach_bf16_copies(&self) {
        for p in self.bert.projections().chain(self.head.projections()) {
            p.detach_bf16();
        }
    }

    /// `labels`: int64 class indices, or float scores when num_labels == 1 (HF's rule).
    /// A libtorch failure (out of memory, an id past the embedding table) is an error.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
    ) -> Result<SequenceClassifierOutput> {
        let run = || -> Result<(BertOutput, Tensor)> {
            let out = self
                .bert
                .forward(input_ids, token_type_ids, attention_mask, train)?;
            let x = &out.pooled_output;
            let p = self.dropout;
            let logits = match &self.head {
                Head::Linear { classifier } => {
                    apply_linear(&dropout(x, p, train)?, classifier, train)?
                }
                Head::PreClassifier {
                    pre_classifier,
                    classifier,
                } => {
                    let x = apply_linear(x, pre_classifier, train)?.f_relu()?;
                    apply_linear(&dropout(&x, p, train)?, classifier, train)?
                }
                Head::Roberta { dense, out_proj } => {
                    let x = apply_linear(&dropout(x, p, train)?, dense, train)?.f_tanh()?;
                    apply_linear(&dropout(&x, p, train)?, out_proj, train)?
                }
                Head::Deberta {
                    pooler,
                    pooler_dropout,
                    act,
                    classifier,
                } => {
                    let x = dropout(x, *pooler_dropout, train)?;
                    let x = activation(&apply_linear(&x, pooler, train)?, *act)?;
                    apply_linear(&dropout(&x, p, train)?, classifier, train)?
                }
            };
            Ok((out, logits))
        };
        // The head too runs under autocast, as in HF where the whole model does.
        let (out, logits) = match self.bert.precision() {
            Precision::Fp32 => run()?,
            Precision::Bf16 => torch_shim::autocast(input_ids.device(), Kind::BFloat16, run)??,
        };
        // The loss in fp32, as autocast's policy for losses has it.
        let logits = logits.f_to_kind(Kind::Float)?;
        let loss = match labels {
            None => None,
            // HF `MSELoss()` / `CrossEntropyLoss()` (mean; -100 ignored, as torch's default).
            Some(labels) if self.num_labels == 1 => Some(
                logits
                    .f_squeeze_dim(-1)?
                    .f_sub(&labels.f_to_kind(Kind::Float)?)?
                    .f_square()?
                    .f_mean(Kind::Float)?,
            ),
            Some(labels) => Some(
                logits
                    .f_log_softmax(-1, Kind::Float)?
                    .f_nll_loss::<Tensor>(labels, None, Reduction::Mean, -100)?,
            ),
        };
        Ok(SequenceClassifierOutput {
            logits,
            loss,
            pooled_output: out.pooled_output,
            last_hidden_state: out.last_hidden_state,
        })
    }
}
