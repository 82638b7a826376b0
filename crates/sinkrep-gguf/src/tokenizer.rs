//! The tokenizer stored in a GGUF's metadata: a byte-level BPE (`gpt2`) rebuilt as a
//! Hugging Face `tokenizers` tokenizer, or a SentencePiece vocabulary (`llama`) tokenized
//! by score-ordered merging with byte fallback (`crate::spm`, as llama.cpp does).
//!
//! Keys read (llama.cpp's `llama-vocab.cpp` conventions):
//! `tokenizer.ggml.model` (`gpt2` or `llama`); for `llama`, `tokenizer.ggml.scores`,
//! `tokenizer.ggml.unknown_token_id` and `tokenizer.ggml.add_space_prefix`; for `gpt2`,
//! `tokenizer.ggml.pre` (pre-tokenizer scheme), `tokenizer.ggml.tokens`,
//! `tokenizer.ggml.merges`, optional `tokenizer.ggml.token_type`,
//! `tokenizer.ggml.bos_token_id`, `tokenizer.ggml.eos_token_id`,
//! `tokenizer.ggml.add_bos_token`.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::spm::{self, Spm};
use crate::{GgufError, GgufFile};

pub const MODEL_KEY: &str = "tokenizer.ggml.model";
pub const PRE_KEY: &str = "tokenizer.ggml.pre";
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
pub const MERGES_KEY: &str = "tokenizer.ggml.merges";
pub const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
pub const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
pub const EOS_KEY: &str = "tokenizer.ggml.eos_token_id";
pub const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";
pub const SCORES_KEY: &str = "tokenizer.ggml.scores";
pub const UNK_KEY: &str = "tokenizer.ggml.unknown_token_id";
pub const ADD_SPACE_PREFIX_KEY: &str = "tokenizer.ggml.add_space_prefix";

/// llama.cpp token types (`llama_token_type`) that are not plain vocabulary:
/// control tokens (`<|im_start|>`) and user-defined ones. Both are matched whole
/// in the input text before BPE runs, as llama.cpp does with `parse_special`.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("unsupported tokenizer model '{model}' in '{MODEL_KEY}': supported are 'gpt2' (byte-level BPE) and 'llama' (SentencePiece)")]
    UnsupportedModel { model: String },

    #[error("unsupported pre-tokenizer '{pre}' in '{PRE_KEY}': supported are 'smollm' and 'gpt-2' (add its llama.cpp regex to sinkrep-gguf's tokenizer module)")]
    UnsupportedPre { pre: String },

    #[error("'{TOKENS_KEY}' has token '{token}' at ids {first} and {second}")]
    DuplicateToken {
        token: String,
        first: u32,
        second: u32,
    },

    #[error("'{TOKENS_KEY}' has {count} entries; more than a u32 id can address")]
    TooManyTokens { count: usize },

    #[error(
        "'{MERGES_KEY}' entry {index} is '{merge}', expected two tokens separated by one space"
    )]
    BadMerge { index: usize, merge: String },

    #[error("'{key}' has {len} entries but '{TOKENS_KEY}' has {vocab_size}")]
    LengthMismatch {
        key: &'static str,
        len: usize,
        vocab_size: usize,
    },

    #[error("'{key}' is token id {id}, outside the vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        key: &'static str,
        id: u32,
        vocab_size: usize,
    },

    #[error("'{ADD_BOS_KEY}' is true but '{BOS_KEY}' is missing")]
    MissingBos,

    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange { id: u32, vocab_size: usize },

    #[error("cannot build the BPE tokenizer: {0}")]
    Build(String),

    #[error("cannot encode text: {0}")]
    Encode(String),

    #[error("cannot decode tokens: {0}")]
    Decode(String),

    #[error("tokenizer.json: {0}")]
    HfJson(String),

    #[error("only a byte-level BPE tokenizer can be written as tokenizer.json; this one is SentencePiece")]
    NotBpe,
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// The pre-tokenizer schemes we know, by their `tokenizer.ggml.pre` names.
///
/// llama.cpp (`llm_tokenizer_bpe`) gives `smollm` two regexes: `\p{N}` (every digit
/// on its own) and then GPT-2's split regex. The same pair is what SmolLM2's own
/// `tokenizer.json` says: `Digits(individual_digits)` then `ByteLevel(use_regex)`.
fn pre_tokenizer(pre: &str) -> Option<PreTokenizerWrapper> {
    // add_prefix_space = false: GGUF `gpt2` models add no leading space.
    let byte_level = || ByteLevel::new(false, true, true);
    match pre {
        "smollm" => Some(Sequence::new(vec![Digits::new(true).into(), byte_level().into()]).into()),
        "gpt-2" => Some(byte_level().into()),
        _ => None,
    }
}

/// How the vocabulary turns text into ids.
#[derive(Debug, Clone)]
enum Backend {
    /// Byte-level BPE (`gpt2`), through Hugging Face `tokenizers`.
    Bpe(Box<Tokenizer>),
    /// SentencePiece (`llama`): the token types decide how ids decode (byte tokens are
    /// bytes, "▁" is a space).
    Spm { spm: Box<Spm>, types: Vec<i32> },
}

/// A GGUF's tokenizer: byte-level BPE or SentencePiece.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    inner: Backend,
    tokens: Vec<String>,
    pre: String,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// Whether [`GgufTokenizer::encode`] prepends BOS. From `add_bos_token`; when
    /// the key is absent, llama.cpp's default: false for BPE, true for SentencePiece.
    add_bos: bool,
}

impl GgufTokenizer {
    /// Builds the tokenizer from the file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str(MODEL_KEY)?;
        match model {
            "gpt2" => {}
            "llama" => return Self::from_gguf_spm(file),
            _ => {
                return Err(TokenizerError::UnsupportedModel {
                    model: model.to_string(),
                })
            }
        }
        // llama.cpp treats a missing `pre` as "default", whose regexes differ from
        // both schemes below: refuse rather than guess.
        let pre = file.get_str_opt(PRE_KEY)?.unwrap_or("default").to_string();
        let pre_tokenizer = pre_tokenizer(&pre)
            .ok_or_else(|| TokenizerError::UnsupportedPre { pre: pre.clone() })?;

        let tokens = read_tokens(file)?;
        let vocab_size = tokens.len();
        let mut vocab = Vocab::with_capacity(vocab_size);
        for (id, token) in (0u32..).zip(&tokens) {
            if let Some(first) = vocab.insert(token.clone(), id) {
                return Err(TokenizerError::DuplicateToken {
                    token: token.clone(),
                    first,
                    second: id,
                });
            }
        }
        let merges = file
            .get_str_array(MERGES_KEY)?
            .into_iter()
            .enumerate()
            .map(|(index, m)| match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(TokenizerError::BadMerge {
                    index,
                    merge: m.to_string(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;

        let (bos_id, eos_id, add_bos) = specials(file, vocab_size, false)?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        if file.get(TOKEN_TYPE_KEY).is_some() {
            let types = file.get_i32_array(TOKEN_TYPE_KEY)?;
            if types.len() != vocab_size {
                return Err(TokenizerError::LengthMismatch {
                    key: TOKEN_TYPE_KEY,
                    len: types.len(),
                    vocab_size,
                });
            }
            let added = |kind: i32, special: bool| {
                tokens
                    .iter()
                    .zip(&types)
                    .filter(move |(_, &t)| t == kind)
                    .map(move |(tok, _)| AddedToken::from(tok.clone(), special))
                    .collect::<Vec<_>>()
            };
            inner
                .add_special_tokens(added(TOKEN_TYPE_CONTROL, true))
                .map_err(|e| TokenizerError::Build(e.to_string()))?;
            inner
                .add_tokens(added(TOKEN_TYPE_USER_DEFINED, false))
                .map_err(|e| TokenizerError::Build(e.to_string()))?;
        }

        Ok(Self {
            inner: Backend::Bpe(Box::new(inner)),
            tokens,
            pre,
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// A Hugging Face `tokenizer.json` (what HF checkpoint folders ship). `bos_id` and
    /// `eos_id` come from the folder's configs; `add_bos` from `tokenizer_config.json`'s
    /// `add_bos_token` when it says, else from the file's post-processor (does encoding
    /// with special tokens put `bos_id` first?). Encoding never runs the post-processor:
    /// the BOS is added here, as for GGUF tokenizers.
    pub fn from_hf_json(
        json: &str,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: Option<bool>,
    ) -> Result<Self> {
        let inner: Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| TokenizerError::HfJson(e.to_string()))?;
        let vocab = inner.get_vocab(true);
        let mut tokens = vec![None; vocab.len()];
        for (piece, id) in vocab {
            match tokens.get_mut(id as usize) {
                Some(slot) => *slot = Some(piece),
                None => {
                    return Err(TokenizerError::HfJson(format!(
                        "token id {id} is past the {} entries of the vocabulary",
                        tokens.len()
                    )))
                }
            }
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.ok_or_else(|| TokenizerError::HfJson(format!("no token has id {id}"))))
            .collect::<Result<Vec<String>>>()?;
        for (what, id) in [("bos", bos_id), ("eos", eos_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
                return Err(TokenizerError::HfJson(format!(
                    "the {what} token id {id} is outside its vocabulary of {} tokens",
                    tokens.len()
                )));
            }
        }
        let add_bos = match (add_bos, bos_id) {
            (Some(a), _) => a,
            (None, None) => false,
            (None, Some(bos)) => {
                let first = |special: bool| {
                    inner
                        .encode_fast("a", special)
                        .map(|e| e.get_ids().first().copied())
                        .map_err(|e| TokenizerError::Encode(e.to_string()))
                };
                first(true)? == Some(bos) && first(false)? != Some(bos)
            }
        };
        if add_bos && bos_id.is_none() {
            return Err(TokenizerError::MissingBos);
        }
        Ok(Self {
            inner: Backend::Bpe(Box::new(inner)),
            tokens,
            pre: "tokenizer.json".into(),
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// The byte vocabulary of models sinkrep trains on bytes (id = byte value), as a
    /// byte-level BPE without merges, so it can be written as a `tokenizer.json` that HF
    /// loads too. Each byte's piece is its GPT-2 byte-level character.
    pub fn bytes() -> Self {
        let tokens: Vec<String> = gpt2_byte_chars().iter().map(|c| c.to_string()).collect();
        let vocab: Vocab = (0u32..).zip(&tokens).map(|(i, t)| (t.clone(), i)).collect();
        // 256 distinct one-character pieces and no merges: the builder cannot fail.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .unwrap_or_default();
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Self {
            inner: Backend::Bpe(Box::new(inner)),
            tokens,
            pre: "bytes".into(),
            bos_id: None,
            eos_id: None,
            add_bos: false,
        }
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` (byte-level BPE only).
    pub fn to_hf_json(&self) -> Result<String> {
        match &self.inner {
            Backend::Bpe(t) => t
                .to_string(true)
                .map_err(|e| TokenizerError::HfJson(e.to_string())),
            Backend::Spm { .. } => Err(TokenizerError::NotBpe),
        }
    }

    /// The SentencePiece (`llama`) vocabulary: tokens, their scores (the merge order)
    /// and types (which tokens are bytes or special), no merges.
    fn from_gguf_spm(file: &GgufFile) -> Result<Self> {
        let tokens = read_tokens(file)?;
        let vocab_size = tokens.len();
        let scores = file.get_f32_array(SCORES_KEY)?;
        let types = match file.get(TOKEN_TYPE_KEY) {
            Some(_) => file.get_i32_array(TOKEN_TYPE_KEY)?,
            None => vec![1; vocab_size],
        };
        for (key, len) in [(SCORES_KEY, scores.len()), (TOKEN_TYPE_KEY, types.len())] {
            if len != vocab_size {
                return Err(TokenizerError::LengthMismatch {
                    key,
                    len,
                    vocab_size,
                });
            }
        }
        let (bos_id, eos_id, add_bos) = specials(file, vocab_size, true)?;
        let unk_id = special_id(file, UNK_KEY, vocab_size)?;
        let add_space_prefix = file.get_bool_opt(ADD_SPACE_PREFIX_KEY)?.unwrap_or(true);
        let spm = Spm::new(&tokens, scores, &types, unk_id, add_space_prefix);
        Ok(Self {
            inner: Backend::Spm {
                spm: Box::new(spm),
                types,
            },
            tokens,
            pre: file.get_str_opt(PRE_KEY)?.unwrap_or("default").to_string(),
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// Token ids for `text`, with BOS first only when [`GgufTokenizer::add_bos`].
    /// Control tokens written literally in `text` (e.g. `<|im_start|>`) become
    /// their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_bos(text, self.add_bos)
    }

    /// Like [`GgufTokenizer::encode`], choosing explicitly whether to prepend BOS.
    pub fn encode_with_bos(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(self.bos_id.ok_or(TokenizerError::MissingBos)?);
        }
        match &self.inner {
            Backend::Bpe(t) => {
                let encoding = t
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                ids.extend_from_slice(encoding.get_ids());
            }
            Backend::Spm { spm, .. } => ids.extend(spm.encode(text)),
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included, so that
    /// `decode(encode(t)) == t` for any text without a BOS.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.tokens.len()) {
            return Err(TokenizerError::IdOutOfRange {
                id,
                vocab_size: self.tokens.len(),
            });
        }
        match &self.inner {
            Backend::Bpe(t) => t
                .decode(ids, false)
                .map_err(|e| TokenizerError::Decode(e.to_string())),
            Backend::Spm { types, .. } => {
                // Byte tokens are their byte; every other token its text with "▁" as
                // a space. Bytes of one character may span several tokens, so the
                // UTF-8 is decoded once at the end.
                let mut bytes = Vec::new();
                for &id in ids {
                    let piece = &self.tokens[id as usize];
                    match spm::parse_byte_piece(piece) {
                        Some(b) if types[id as usize] == spm::TYPE_BYTE => bytes.push(b),
                        _ => bytes.extend(piece.replace(spm::SPACE, " ").bytes()),
                    }
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// The decoded text of one token (`" Paris"`). A token holding part of a
    /// multi-byte character decodes to U+FFFD.
    pub fn token_text(&self, id: u32) -> Result<String> {
        self.decode(&[id])
    }

    /// The token as stored in the vocabulary (`"ĠParis"` for byte-level BPE,
    /// `"▁Paris"` for SentencePiece).
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry given as stored.
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        match &self.inner {
            Backend::Bpe(t) => t.token_to_id(piece),
            Backend::Spm { spm, .. } => spm.piece_id(piece),
        }
    }

    /// `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub fn model(&self) -> &'static str {
        match self.inner {
            Backend::Bpe(_) => "gpt2",
            Backend::Spm { .. } => "llama",
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The `tokenizer.ggml.pre` scheme in use.
    pub fn pre(&self) -> &str {
        &self.pre
    }
}

/// GPT-2's byte-to-character table (`bytes_to_unicode` in its `encoder.py`): printable
/// Latin-1 bytes are themselves, the other 68 map to U+0100 onwards in byte order.
fn gpt2_byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        out[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\u{FFFD}')
        };
    }
    out
}

/// A special token id from `key`, checked against the vocabulary.
fn special_id(file: &GgufFile, key: &'static str, vocab_size: usize) -> Result<Option<u32>> {
    match file.get_u32_opt(key)? {
        Some(id) if id as usize >= vocab_size => Err(TokenizerError::SpecialIdOutOfRange {
            key,
            id,
            vocab_size,
        }),
        id => Ok(id),
    }
}

/// BOS, EOS and whether to add BOS (`add_bos_default` when the key is absent).
fn specials(
    file: &GgufFile,
    vocab_size: usize,
    add_bos_default: bool,
) -> Result<(Option<u32>, Option<u32>, bool)> {
    let bos_id = special_id(file, BOS_KEY, vocab_size)?;
    let eos_id = special_id(file, EOS_KEY, vocab_size)?;
    let add_bos = file.get_bool_opt(ADD_BOS_KEY)?.unwrap_or(add_bos_default);
    if add_bos && bos_id.is_none() {
        return Err(TokenizerError::MissingBos);
    }
    Ok((bos_id, eos_id, add_bos))
}

/// `tokenizer.ggml.tokens`, at most as many as a u32 id can address.
fn read_tokens(file: &GgufFile) -> Result<Vec<String>> {
    let tokens: Vec<String> = file
        .get_str_array(TOKENS_KEY)?
        .into_iter()
        .map(str::to_string)
        .collect();
    if u32::try_from(tokens.len()).is_err() {
        return Err(TokenizerError::TooManyTokens {
            count: tokens.len(),
        });
    }
    Ok(tokens)
}
