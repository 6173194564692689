//! glue-data tokenization against HF transformers (tests/golden/tokenization.json,
//! written by scripts/golden_tokenization.py) on the real GLUE rows of every split
//! in the mirror, including the longest, truncated ones.

use std::collections::HashMap;

use glue_data::{load_split, GlueSplit, Preprocessor, Task};
use glue_testkit::{mirror_dir, test_model_dir, workspace_root};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encodings_match_hf_transformers_for_every_split_in_the_mirror() {
    let text =
        std::fs::read_to_string(workspace_root().join("tests/golden/tokenization.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let short = Preprocessor::from_file(&test_model_dir(), 24).unwrap();
    let mut splits: HashMap<(String, String), GlueSplit> = HashMap::new();
    let cases = golden["cases"].as_array().unwrap();
    let mut truncated = 0;
    let mut pairs = 0;
    for case in cases {
        let config = case["config"].as_str().unwrap().to_string();
        let split = case["split"].as_str().unwrap().to_string();
        let row = case["row"].as_u64().unwrap() as usize;
        let data = splits
            .entry((config.clone(), split.clone()))
            .or_insert_with(|| {
                let task: Task = config.parse().unwrap();
                load_split(&mirror_dir(), task, &split).unwrap()
            });
        let example = data.get(row).unwrap();
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let p = if max_length == 24 { &short } else { &pre };
        assert_eq!(p.max_seq_length(), max_length);
        let encoded = p
            .encode_examples(std::slice::from_ref(example))
            .unwrap()
            .remove(0);
        // The full tokenizers pipeline (non-ASCII texts take it) must agree too.
        assert_eq!(encoded, p.encode_features_full(&example.texts).unwrap());
        let at = format!("{config}/{split}[{row}] max_length {max_length}");
        assert_eq!(
            encoded.input_ids,
            ids(&case["input_ids"]),
            "input_ids of {at}"
        );
        assert_eq!(
            encoded.token_type_ids,
            ids(&case["token_type_ids"]),
            "token_type_ids of {at}"
        );
        assert_eq!(
            encoded.attention_mask,
            ids(&case["attention_mask"]),
            "attention_mask of {at}"
        );
        truncated +=
            usize::from(case["untruncated_length"].as_u64().unwrap() as usize > max_length);
        pairs += usize::from(example.texts.len() == 2);
    }
    assert_eq!(
        splits.len(),
        23,
        "every split file of the mirror is covered"
    );
    assert!(truncated >= 20, "truncated cases: {truncated}");
    assert!(
        pairs > 0 && pairs < cases.len(),
        "both single and pair tasks"
    );
}

/// The ASCII fast path must give the full `tokenizers` pipeline's ids for every
/// example of every split in the mirror (and it must really be in use).
#[test]
fn fast_path_equals_the_full_pipeline_on_the_whole_mirror() {
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    assert!(
        pre.has_fast_path(),
        "the BERT tokenizer should take the fast path"
    );
    let short = Preprocessor::from_file(&test_model_dir(), 24).unwrap();
    let mut checked = 0;
    for task in Task::ALL {
        for split in task.spec().splits {
            // Only the files the mirror does not have may be skipped (PROVENANCE.md:
            // QQP, MNLI train/mismatched/test, QNLI train); a file that is there must load.
            if !glue_data::split_path(&mirror_dir(), task, split).exists() {
                eprintln!("not in the mirror, skipped: {task}/{}", split.name);
                continue;
            }
            let data = load_split(&mirror_dir(), task, split.name)
                .unwrap_or_else(|e| panic!("{task}/{}: {e}", split.name));
            for (i, ex) in data.examples.iter().enumerate() {
                // Every example at 128 tokens; a sample at 24, where pairs truncate often.
                let pres: &[&Preprocessor] = if i % 10 == 0 {
                    &[&pre, &short]
                } else {
                    &[&pre]
                };
                for p in pres {
                    let fast = p.encode_features(&ex.texts).unwrap();
                    let full = p.encode_features_full(&ex.texts).unwrap();
                    assert_eq!(
                        fast,
                        full,
                        "{task}/{}[{i}] at max_length {}",
                        split.name,
                        p.max_seq_length()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 130_000, "{checked}");
}

/// Inputs at the edges of transformers' pair handling (empty and blank texts).
#[test]
fn pair_edge_cases_match_hf_transformers() {
    let text =
        std::fs::read_to_string(workspace_root().join("tests/golden/tokenization.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let cases = golden["edge_cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let texts: Vec<String> = case["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        for encoded in [
            pre.encode_features(&texts).unwrap(),
            pre.encode_features_full(&texts).unwrap(),
        ] {
            assert_eq!(encoded.input_ids, ids(&case["input_ids"]), "{texts:?}");
            assert_eq!(
                encoded.token_type_ids,
                ids(&case["token_type_ids"]),
                "{texts:?}"
            );
        }
    }
}

#[test]
fn fast_path_corner_cases() {
    let pre = Preprocessor::from_file(&test_model_dir(), 16).unwrap();
    let long_word = "a".repeat(150);
    let cases = [
        "Hello, World!!",
        "tabs\tand\nnew\rlines  and \u{0b}vertical\u{0c}feeds",
        "control\u{01}chars\u{7f}vanish",
        "an [SEP] inside and [unk] too",
        "Ünïcödé goes the full way",
        "",
        "   ",
        long_word.as_str(),
        "xqzjvwk unaffable supercalifragilistic",
    ];
    for a in cases {
        for b in cases {
            for texts in [vec![a.to_string()], vec![a.to_string(), b.to_string()]] {
                assert_eq!(
                    pre.encode_features(&texts).unwrap(),
                    pre.encode_features_full(&texts).unwrap(),
                    "{texts:?}"
                );
            }
        }
    }
}
