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
        let encoded = pre
            .encode_examples(std::slice::from_ref(example))
            .unwrap()
            .remove(0);
        let at = format!("{config}/{split}[{row}]");
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
        truncated += usize::from(case["untruncated_length"].as_u64().unwrap() > 128);
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
