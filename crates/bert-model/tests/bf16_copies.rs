//! bf16 weight copies (`attach_bf16_copies`) against autocast's own casts: the same
//! loss and the same gradients, bit for bit, on the test model with dropout on; and
//! the word embeddings' sparse gradient against the dense one. Its own test binary:
//! the steps seed torch's global generator.

mod common;

use std::collections::BTreeMap;

use bert_model::{BertForSequenceClassification, Precision};
use tch::{Kind, Tensor};

/// One training forward and backward: the loss and every gradient, by variable name
/// (a copy's gradient under its weight's name, widened).
fn step(
    model: &BertForSequenceClassification,
    copies: &[(String, Tensor)],
) -> (f64, BTreeMap<String, Tensor>) {
    let vars = model.vs.variables();
    let all: Vec<&Tensor> = vars.values().chain(copies.iter().map(|c| &c.1)).collect();
    torch_shim::set_grads_to_none(&all).unwrap();
    let ids = Tensor::from_slice(&glue_testkit::hf_check_input_ids(30522)).view([2, 8]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    tch::manual_seed(11);
    let out = model
        .forward(
            &ids,
            &ids.zeros_like(),
            &mask,
            Some(&Tensor::from_slice(&[0i64, 1])),
            true,
        )
        .unwrap();
    let loss = out.loss.unwrap();
    loss.backward();
    let mut grads: BTreeMap<String, Tensor> = vars
        .iter()
        .filter(|(_, v)| v.grad().defined())
        .map(|(k, v)| (k.clone(), v.grad().shallow_clone()))
        .collect();
    for (name, copy) in copies {
        let widened = copy.grad().to_kind(Kind::Float);
        assert!(
            grads.insert(name.clone(), widened).is_none(),
            "{name}: both have gradients"
        );
    }
    (loss.double_value(&[]), grads)
}

#[test]
fn bf16_copies_give_autocasts_loss_and_gradients() {
    let mut model = common::bf16_mrpc_model();
    let (loss, grads) = step(&model, &[]);

    let vars = model.vs.variables();
    let copies: Vec<(String, Tensor)> = model
        .model
        .attach_bf16_copies()
        .unwrap()
        .into_iter()
        .map(|c| {
            let name = vars
                .iter()
                .find(|(_, v)| v.data_ptr() == c.master.data_ptr())
                .map(|(k, _)| k.clone())
                .expect("a copy of a model variable");
            assert!(
                c.copy.equal(&c.master.to_kind(Kind::BFloat16)),
                "{name}: not the cast"
            );
            (name, c.copy)
        })
        .collect();
    // Six linears per layer, the pooler and the classifier, each weight and bias.
    assert_eq!(copies.len(), 2 * (6 * 6 + 2));
    let (loss_with, grads_with) = step(&model, &copies);
    assert_eq!(loss_with, loss, "another loss with the copies");
    assert_eq!(
        grads_with.keys().collect::<Vec<_>>(),
        grads.keys().collect::<Vec<_>>()
    );
    for (name, g) in &grads {
        assert!(grads_with[name].equal(g), "{name}: another gradient");
    }

    // The word embeddings' sparse gradient holds the dense one's rows.
    let word = "bert.embeddings.word_embeddings.weight";
    model.model.bert.set_sparse_word_gradient(true);
    let (loss_sparse, grads_sparse) = step(&model, &copies);
    model.model.bert.set_sparse_word_gradient(false);
    assert_eq!(loss_sparse, loss);
    let sparse = &grads_sparse[word];
    assert!(sparse.is_sparse());
    let dense = sparse.coalesce().to_dense(None, false);
    assert!(
        dense.allclose(&grads[word], 1e-6, 1e-12, false),
        "sparse and dense word-embedding gradients differ"
    );

    // Out of autocast the fp32 weights serve, copies attached or not.
    model.set_precision(Precision::Fp32).unwrap();
    let (fp32_with, _) = step(&model, &[]);
    model.model.detach_bf16_copies();
    let (fp32, _) = step(&model, &[]);
    assert_eq!(fp32_with, fp32);
}
