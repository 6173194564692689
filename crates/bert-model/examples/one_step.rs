//! The seed notebook's section 2, "Training on one batch":
//!
//! ```python
//! checkpoint = "bert-base-uncased"
//! tokenizer = AutoTokenizer.from_pretrained(checkpoint)
//! model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
//! sequences = ["This is a great movie!", "This is a fantastic movie!"]
//! batch = tokenizer(sequences, padding=True, truncation=True, return_tensors="pt")
//! batch["labels"] = torch.tensor([1, 1])
//! optimizer = AdamW(model.parameters(), lr=5e-5)
//! loss = model(**batch).loss
//! loss.backward()
//! optimizer.step()
//! ```
//!
//! Run: `cargo run --release -p bert-model --example one_step -- [MODEL_DIR_OR_HUB_ID]`
//! (default: the test model in .venv/test-model).

use bert_model::{select_device, BertForSequenceClassification, DeviceChoice};
use glue_data::{Collator, EncodedSplit, Features, Label, Preprocessor};
use tch::nn::OptimizerConfig;
use tch::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let checkpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| ".venv/test-model".to_string());
    let (device, notice) = select_device(DeviceChoice::Auto)?;
    eprintln!("{notice}");
    tch::manual_seed(42);
    let (model, report) = BertForSequenceClassification::from_pretrained(
        &checkpoint,
        Some(&["negative", "positive"]),
        device,
    )?;
    eprint!("{report}");
    let tokenizer_dir = model
        .tokenizer_dir
        .clone()
        .ok_or("the model folder has no tokenizer.json")?;
    let pre = Preprocessor::from_file(&tokenizer_dir, 512)?;

    let sequences = ["This is a great movie!", "This is a fantastic movie!"];
    let features = sequences
        .iter()
        .map(|s| {
            pre.encode_texts(&[s.to_string()])
                .map(|e| Features::from(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encoded = EncodedSplit {
        features,
        labels: vec![Label::Class(1), Label::Class(1)],
        idx: vec![0, 1],
    };
    let batch = Collator::new(&pre).collate(&encoded, &[0, 1])?;
    let shape = [batch.batch_size as i64, batch.seq_len as i64];
    let t = |v: &[i64]| Tensor::from_slice(v).view(shape).to(device);
    let labels = Tensor::from_slice(&[1i64, 1]).to(device);

    let mut optimizer = tch::nn::AdamW::default().build(&model.vs, 5e-5)?;
    let forward = || -> Result<Tensor, Box<dyn std::error::Error>> {
        Ok(model
            .forward(
                &t(&batch.input_ids),
                &t(&batch.token_type_ids),
                &t(&batch.attention_mask),
                Some(&labels),
                true,
            )?
            .loss
            .expect("labels were given"))
    };
    let loss = forward()?;
    println!("input_ids shape: {shape:?}");
    println!("initial loss: {:.4}", loss.double_value(&[]));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    let after = tch::no_grad(forward)?;
    println!(
        "loss after one AdamW step (lr 5e-5): {:.4}",
        after.double_value(&[])
    );
    Ok(())
}
