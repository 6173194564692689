//! bf16 training on CPU with dropout on, where attention takes the fp32 math path
//! that SDPA takes under autocast and the packed rows are rounded for oneDNN. Its own
//! test binary: torch's global generator must not be shared with concurrent tests for
//! "same seed, same step" to hold.

mod common;

use bert_model::{BertForSequenceClassification, Layout};
use tch::{Kind, Tensor};

#[test]
fn bf16_training_steps_repeat_with_the_seed_in_both_layouts() {
    let mut model = common::bf16_mrpc_model();
    let ids = Tensor::from_slice(&glue_testkit::hf_check_input_ids(30522)).view([2, 8]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let types = ids.zeros_like();
    let labels = Tensor::from_slice(&[0i64, 1]);
    let step = |model: &BertForSequenceClassification| {
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
        tch::manual_seed(7);
        let out = model
            .forward(&ids, &types, &mask, Some(&labels), true)
            .unwrap();
        assert_eq!(
            out.last_hidden_state.kind(),
            Kind::Float,
            "fp32 residual stream"
        );
        let loss = out.loss.unwrap();
        loss.backward();
        let grad = model.vs.variables()["classifier.weight"].grad().copy();
        (loss.double_value(&[]), grad)
    };
    for layout in [Layout::Padded, Layout::PaddingFree] {
        model.set_layout(layout);
        let (loss, grad) = step(&model);
        let (again, grad_again) = step(&model);
        assert!(
            loss.is_finite() && (loss - 0.69).abs() < 0.2,
            "{layout:?}: loss {loss}"
        );
        assert_eq!(loss, again, "{layout:?}: same seed, another loss");
        assert!(grad.isfinite().all().int64_value(&[]) == 1);
        assert!(
            grad.equal(&grad_again),
            "{layout:?}: same seed, other gradients"
        );
    }
}
