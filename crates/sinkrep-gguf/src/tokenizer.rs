//! The tokenizer stored in a GGUF's metadata, rebuilt as a Hugging Face
//! `tokenizers` byte-level BPE.
//!
//! Keys read (llama.cpp's `llama-vocab.cpp` conventions):
//! `tokenizer.ggml.model` (must be `gpt2`, i.e. byte-level BPE),
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

use crate::{GgufError, GgufFile};

pub const MODEL_KEY: &str = "tokenizer.ggml.model";
pub const PRE_KEY: &str = "tokenizer.ggml.pre";
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
pub const MERGES_KEY: &str = "tokenizer.ggml.merges";
pub const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
pub const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
pub const EOS_KEY: &str = "tokenizer.ggml.eos_token_id";
pub const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";

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

    #[error("unsupported tokenizer model '{model}' in '{MODEL_KEY}': only 'gpt2' (byte-level BPE) is supported")]
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

/// A GGUF's byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    inner: Tokenizer,
    tokens: Vec<String>,
    pre: String,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// Whether [`GgufTokenizer::encode`] prepends BOS. From `add_bos_token`; when
    /// the key is absent, false, llama.cpp's default for BPE vocabularies.
    add_bos: bool,
}

impl GgufTokenizer {
    /// Builds the tokenizer from the file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str(MODEL_KEY)?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                model: model.to_string(),
            });
        }
        // llama.cpp treats a missing `pre` as "default", whose regexes differ from
        // both schemes below: refuse rather than guess.
        let pre = file.get_str_opt(PRE_KEY)?.unwrap_or("default").to_string();
        let pre_tokenizer = pre_tokenizer(&pre)
            .ok_or_else(|| TokenizerError::UnsupportedPre { pre: pre.clone() })?;

        let tokens: Vec<String> = file
            .get_str_array(TOKENS_KEY)?
            .into_iter()
            .map(str::to_string)
            .collect();
        let vocab_size = tokens.len();
        if u32::try_from(vocab_size).is_err() {
            return Err(TokenizerError::TooManyTokens { count: vocab_size });
        }
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

        let special_id = |key: &'static str| -> Result<Option<u32>> {
            match file.get_u32_opt(key)? {
                Some(id) if id as usize >= vocab_size => Err(TokenizerError::SpecialIdOutOfRange {
                    key,
                    id,
                    vocab_size,
                }),
                id => Ok(id),
            }
        };
        let bos_id = special_id(BOS_KEY)?;
        let eos_id = special_id(EOS_KEY)?;
        let add_bos = file.get_bool_opt(ADD_BOS_KEY)?.unwrap_or(false);
        if add_bos && bos_id.is_none() {
            return Err(TokenizerError::MissingBos);
        }

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
            inner,
            tokens,
            pre,
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
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos {
            ids.push(self.bos_id.ok_or(TokenizerError::MissingBos)?);
        }
        ids.extend_from_slice(encoding.get_ids());
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
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The decoded text of one token (`" Paris"`). A token holding part of a
    /// multi-byte character decodes to U+FFFD.
    pub fn token_text(&self, id: u32) -> Result<String> {
        self.decode(&[id])
    }

    /// The token as stored in the vocabulary, in byte-level form (`"ĠParis"`).
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry given in byte-level form.
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
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
