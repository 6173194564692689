//! BERT's input layout, and an allocation-light tokenizer for the common case: a BERT
//! WordPiece tokenizer and ASCII text (nearly all of GLUE). It computes exactly the
//! word pieces `tokenizers` computes (BertNormalizer, BertPreTokenizer, WordPiece)
//! without building `Encoding`s, offsets and token strings.
//! Any text it is not sure about (non-ASCII, or holding an added token such as
//! `[SEP]`) returns `None` and goes through the full tokenizer. Tests compare both
//! paths on the whole GLUE mirror, and both against HF transformers.

use rustc_hash::FxHashMap;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Tokenizer};

use crate::tokenize::Features;

/// `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` with token types 0.. then 1..: the layout
/// of BERT's post-processor, applied after HF's `longest_first` truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BertLayout {
    cls: u32,
    sep: u32,
}

impl BertLayout {
    /// Learns the layout from the tokenizer itself; `None` for other layouts (RoBERTa...).
    pub(crate) fn detect(tokenizer: &Tokenizer) -> Option<Self> {
        let a = tokenizer.encode("a", false).ok()?.get_ids().to_vec();
        let b = tokenizer.encode("b", false).ok()?.get_ids().to_vec();
        let (&[a], &[b]) = (a.as_slice(), b.as_slice()) else {
            return None;
        };
        let single = tokenizer.encode("a", true).ok()?;
        let pair = tokenizer.encode(("a", "b"), true).ok()?;
        let (cls, sep) = match single.get_ids() {
            [cls, id, sep] if *id == a => (*cls, *sep),
            _ => return None,
        };
        if pair.get_ids() != [cls, a, sep, b, sep] || pair.get_type_ids() != [0, 0, 0, 1, 1] {
            return None;
        }
        Some(BertLayout { cls, sep })
    }

    /// Truncates (HF `truncation="longest_first"`, room kept for the special tokens)
    /// and adds `[CLS]`/`[SEP]`. Measured against HF transformers by the golden tests.
    pub(crate) fn assemble(
        &self,
        mut a: Vec<u32>,
        b: Option<Vec<u32>>,
        max_length: usize,
    ) -> Features {
        let pair = b.is_some();
        let mut b = b.unwrap_or_default();
        let budget = max_length.saturating_sub(if pair { 3 } else { 2 });
        if a.len() + b.len() > budget {
            if pair {
                // n1: the shorter input's length; n2: what the longer one may keep.
                let swap = a.len() > b.len();
                let mut n1 = a.len().min(b.len());
                let mut n2 = if n1 > budget { n1 } else { n1.max(budget - n1) };
                if n1 + n2 > budget {
                    n1 = budget / 2;
                    n2 = n1 + budget % 2;
                }
                if swap {
                    std::mem::swap(&mut n1, &mut n2);
                }
                a.truncate(n1);
                b.truncate(n2);
            } else {
                a.truncate(budget);
            }
        }
        let len = a.len() + 2 + if pair { b.len() + 1 } else { 0 };
        let mut input_ids = Vec::with_capacity(len);
        input_ids.push(self.cls);
        input_ids.extend_from_slice(&a);
        input_ids.push(self.sep);
        let mut token_type_ids = vec![0u32; a.len() + 2];
        if pair {
            input_ids.extend_from_slice(&b);
            input_ids.push(self.sep);
            token_type_ids.resize(len, 1);
        }
        Features {
            input_ids,
            token_type_ids,
            attention_mask: vec![1; len],
        }
    }
}

#[derive(Clone)]
pub(crate) struct FastWordPiece {
    vocab: FxHashMap<String, u32>,
    unk: u32,
    prefix: String,
    max_chars: usize,
    lowercase: bool,
    /// Added-token contents, lowercased; a text holding one takes the full path.
    added: Vec<String>,
}

impl FastWordPiece {
    /// `Some` only when the tokenizer is the plain BERT pipeline this path reproduces.
    pub(crate) fn new(tokenizer: &Tokenizer) -> Option<Self> {
        let ModelWrapper::WordPiece(wp) = tokenizer.get_model() else {
            return None;
        };
        let lowercase = match tokenizer.get_normalizer()? {
            NormalizerWrapper::BertNormalizer(n)
                if n.clean_text && n.handle_chinese_chars && n.strip_accents != Some(false) =>
            {
                // strip_accents only touches non-ASCII text, which never comes here.
                n.lowercase
            }
            _ => return None,
        };
        if !matches!(
            tokenizer.get_pre_tokenizer()?,
            PreTokenizerWrapper::BertPreTokenizer(_)
        ) {
            return None;
        }
        let vocab: FxHashMap<String, u32> = wp.get_vocab().into_iter().collect();
        let unk = *vocab.get(&wp.unk_token)?;
        let added = tokenizer
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.to_ascii_lowercase())
            .collect();
        Some(FastWordPiece {
            vocab,
            unk,
            prefix: wp.continuing_subword_prefix.clone(),
            max_chars: wp.max_input_chars_per_word,
            lowercase,
            added,
        })
    }

    /// Word pieces of one ASCII text, or `None` when the full path must decide.
    fn pieces(&self, text: &str, out: &mut Vec<u32>) -> Option<()> {
        if !text.is_ascii() {
            return None;
        }
        if self.added.iter().any(|t| {
            text.len() >= t.len()
                && text
                    .as_bytes()
                    .windows(t.len())
                    .any(|w| w.eq_ignore_ascii_case(t.as_bytes()))
        }) {
            return None;
        }
        let mut word = String::with_capacity(32);
        let mut scratch = String::with_capacity(32);
        for &byte in text.as_bytes() {
            match byte {
                // BertNormalizer clean_text: \t \n \r and space separate words ...
                b'\t' | b'\n' | b'\r' | b' ' => self.flush(&mut word, &mut scratch, out),
                // ... other control characters (and DEL) vanish.
                0..=0x1f | 0x7f => {}
                // BertPreTokenizer: each punctuation character is its own word.
                _ if byte.is_ascii_punctuation() => {
                    self.flush(&mut word, &mut scratch, out);
                    word.push(byte as char);
                    self.flush(&mut word, &mut scratch, out);
                }
                _ => word.push(if self.lowercase {
                    byte.to_ascii_lowercase() as char
                } else {
                    byte as char
                }),
            }
        }
        self.flush(&mut word, &mut scratch, out);
        Some(())
    }

    /// WordPiece: greedy longest match first; a word with an unknown piece is `[UNK]`.
    fn flush(&self, word: &mut String, scratch: &mut String, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.len() > self.max_chars {
            out.push(self.unk);
            word.clear();
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                let piece = &word[start..end];
                let id = if start == 0 {
                    self.vocab.get(piece)
                } else {
                    scratch.clear();
                    scratch.push_str(&self.prefix);
                    scratch.push_str(piece);
                    self.vocab.get(scratch.as_str())
                };
                if let Some(&id) = id {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => out.push(id),
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    break;
                }
            }
            start = end;
        }
        word.clear();
    }

    /// Word pieces of one or two texts (no special tokens); `None` sends the
    /// example to the full tokenizer.
    pub(crate) fn encode(&self, texts: &[String]) -> Option<(Vec<u32>, Option<Vec<u32>>)> {
        let mut a = Vec::with_capacity(64);
        self.pieces(texts.first()?, &mut a)?;
        let b = match texts.get(1) {
            Some(text) => {
                let mut b = Vec::with_capacity(64);
                self.pieces(text, &mut b)?;
                Some(b)
            }
            None => None,
        };
        Some((a, b))
    }
}
