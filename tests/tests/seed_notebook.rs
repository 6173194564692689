//! The seed notebook's printed outputs (HF course, chapter 3 "Processing the data"),
//! reproduced from the real MRPC data with the real bert-base-uncased vocabulary.

use glue_data::{load_split, Collator, Label, Preprocessor, Task};
use glue_testkit::{mirror_dir, test_model_dir};

#[test]
fn raw_train_dataset_14() {
    let train = load_split(&mirror_dir(), Task::Mrpc, "train").unwrap();
    assert_eq!(train.len(), 3668);
    let ex = train.get(14).unwrap();
    assert_eq!(
        ex.texts,
        vec![
            "Gyorgy Heizler , head of the local disaster unit , said the coach was carrying 38 passengers .".to_string(),
            "The head of the local disaster unit , Gyorgy Heizler , said the coach driver had failed to heed red stop lights .".to_string(),
        ]
    );
    assert_eq!(ex.label, Label::Class(0));
    assert_eq!(ex.idx, 15);
    assert_eq!(train.label_name(ex), Some("not_equivalent"));
}

#[test]
fn raw_validation_dataset_87() {
    let validation = load_split(&mirror_dir(), Task::Mrpc, "validation").unwrap();
    let ex = validation.get(87).unwrap();
    assert_eq!(
        ex.texts,
        vec![
            "However , EPA officials would not confirm the 20 percent figure .".to_string(),
            "Only in the past few weeks have officials settled on the 20 percent figure ."
                .to_string(),
        ]
    );
    assert_eq!(ex.idx, 812);
    assert_eq!(ex.label, Label::Class(0));
}

#[test]
fn tokenized_pair_train_15() {
    let train = load_split(&mirror_dir(), Task::Mrpc, "train").unwrap();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let f = pre
        .encode_examples(&train.examples[15..16])
        .unwrap()
        .remove(0);
    assert_eq!(
        f.input_ids,
        vec![
            101, 24049, 2001, 2087, 3728, 3026, 3580, 2343, 2005, 1996, 9722, 1004, 4132, 9340,
            12439, 2964, 2449, 1012, 102, 3026, 3580, 2343, 4388, 24049, 1010, 3839, 2132, 1997,
            1996, 9722, 1998, 4132, 9340, 12439, 2964, 3131, 1010, 2097, 2599, 1996, 2047, 9178,
            1012, 102
        ]
    );
    let mut types = vec![0u32; 19];
    types.extend(vec![1u32; 25]);
    assert_eq!(f.token_type_ids, types);
    assert_eq!(f.attention_mask, vec![1u32; 44]);
}

#[test]
fn dynamic_padding_of_the_first_8_train_pairs() {
    let train = load_split(&mirror_dir(), Task::Mrpc, "train").unwrap();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let encoded = pre.encode_split(&train).unwrap();
    let lengths: Vec<usize> = encoded.lengths()[..8].to_vec();
    assert_eq!(lengths, vec![50, 59, 47, 67, 59, 50, 62, 32]);
    let batch = Collator::new(&pre)
        .collate(&encoded, &(0..8).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(batch.shape(), [8, 67]);
    // Row 7 (32 tokens) is padded with [PAD] = 0 and a zero mask.
    assert_eq!(&batch.attention_mask[7 * 67 + 31..7 * 67 + 33], &[1, 0]);
    assert_eq!(batch.input_ids[7 * 67 + 66], 0);
    assert_eq!(
        Collator::new(&pre)
            .with_pad_to_multiple_of(Some(8))
            .collate(&encoded, &(0..8).collect::<Vec<_>>())
            .unwrap()
            .shape(),
        [8, 72]
    );
}
