//! BERT for sequence classification in tch, loading and saving Hugging Face checkpoints.

pub mod hub;
