//! `inspect` and `tokenize`: the seed notebook's data sections as commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bert_model::hub::ModelSource;
use clap::Args;
use glue_data::{
    load_split, Features, GlueSplit, Label, Preprocessor, Task, DEFAULT_MAX_SEQ_LENGTH,
};

use crate::output::write_atomically;
use crate::DataArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Split name (train, validation, test; mnli: validation_matched, ...).
    #[arg(long, default_value = "train")]
    split: String,
    /// Row position in the split (not the `idx` column).
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Print the split's columns and types instead of an example.
    #[arg(long)]
    features: bool,
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "train")]
    split: String,
    /// Row position of the example to show.
    #[arg(long, conflicts_with = "all")]
    index: Option<usize>,
    /// Tokenize every example of the split (needs --output).
    #[arg(long, requires = "output")]
    all: bool,
    /// JSON-lines file for --all: one line per example (idx, input_ids, token_type_ids, attention_mask).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Model folder or hub id whose tokenizer.json to use.
    #[arg(long, default_value = "bert-base-uncased")]
    tokenizer: String,
    /// Truncate (longest_first) to this many tokens.
    #[arg(long, default_value_t = DEFAULT_MAX_SEQ_LENGTH)]
    max_seq_length: usize,
}

fn load(data: &DataArgs, split: &str) -> Result<GlueSplit> {
    let task: Task = data.task.parse()?;
    Ok(load_split(&data.data_dir, task, split)?)
}

fn python_str(s: &str) -> String {
    // Python's repr of the strings in GLUE: single quotes unless the text has one.
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let task: Task = args.data.task.parse()?;
    let spec = task.spec();
    if args.features {
        spec.split(&args.split)?;
        let mut parts: Vec<String> = spec
            .text_columns
            .iter()
            .map(|c| format!("'{c}': Value('string')"))
            .collect();
        parts.push(if spec.is_regression() {
            "'label': Value('float32')".to_string()
        } else {
            let names: Vec<String> = spec.label_names.iter().map(|n| format!("'{n}'")).collect();
            format!("'label': ClassLabel(names=[{}])", names.join(", "))
        });
        parts.push("'idx': Value('int32')".to_string());
        println!("{{{}}}", parts.join(", "));
        return Ok(());
    }
    let split = load(&args.data, &args.split)?;
    let ex = split.get(args.index)?;
    let mut fields: Vec<String> = spec
        .text_columns
        .iter()
        .zip(&ex.texts)
        .map(|(c, t)| format!("'{c}': {}", python_str(t)))
        .collect();
    fields.push(match ex.label {
        Label::Class(c) => format!("'label': {c}"),
        Label::Score(s) => format!("'label': {s:?}"),
    });
    fields.push(format!("'idx': {}", ex.idx));
    println!("{{{}}}", fields.join(", "));
    match split.label_name(ex) {
        Some(name) => println!("label name: {name}"),
        None if ex.label.is_missing() => println!("label name: (unlabelled test example: -1)"),
        None => {}
    }
    Ok(())
}

fn preprocessor(args: &TokenizeArgs) -> Result<Preprocessor> {
    let source = ModelSource::new(&args.tokenizer);
    let file = source.require("tokenizer.json")?;
    Ok(Preprocessor::from_file(&file, args.max_seq_length)?)
}

fn json_line(idx: i32, f: &Features) -> String {
    serde_json::json!({
        "idx": idx,
        "input_ids": f.input_ids,
        "token_type_ids": f.token_type_ids,
        "attention_mask": f.attention_mask,
    })
    .to_string()
}

pub fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let split = load(&args.data, &args.split)?;
    if args.all {
        let output = args
            .output
            .as_ref()
            .context("--all needs --output FILE.jsonl")?;
        let pre = preprocessor(args)?;
        let features = pre.encode_examples(&split.examples)?;
        write_atomically(output, |out| {
            for (ex, f) in split.examples.iter().zip(&features) {
                writeln!(out, "{}", json_line(ex.idx, f))?;
            }
            Ok(())
        })?;
        println!(
            "wrote {} examples of {}/{} to {}",
            features.len(),
            split.task,
            split.split,
            output.display()
        );
        return Ok(());
    }
    let index = args.index.unwrap_or(0);
    let ex = split.get(index)?;
    let pre = preprocessor(args)?;
    let f = pre.encode_features(&ex.texts)?;
    println!("input_ids: {:?}", f.input_ids);
    println!("token_type_ids: {:?}", f.token_type_ids);
    println!("attention_mask: {:?}", f.attention_mask);
    let tokens: Vec<String> = pre
        .tokens(&f.input_ids)
        .iter()
        .map(|t| python_str(t))
        .collect();
    println!("tokens: [{}]", tokens.join(", "));
    Ok(())
}
