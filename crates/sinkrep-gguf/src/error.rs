//! The one error type of this crate. Every message is one self-contained line:
//! it says what was being read, where, and what was found.

use std::path::PathBuf;

use crate::GgmlType;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be read from disk.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Any other error, with the path of the file it concerns.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<GgufError>,
    },

    #[error("not a GGUF file: the first 4 bytes are {found:02x?} (\"{}\"), expected \"GGUF\"", found.escape_ascii())]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version}{hint}; this reader handles versions 2 and 3")]
    UnsupportedVersion { version: u32, hint: &'static str },

    #[error("truncated GGUF file: reading {what} at offset {offset} needs {needed} bytes, but only {available} remain")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// A count, length or size read from the file that cannot be right.
    #[error("corrupt GGUF file: {what} is {value} (read at offset {offset}), which is impossible: {reason}")]
    Absurd {
        what: String,
        value: u64,
        offset: u64,
        reason: String,
    },

    #[error(
        "corrupt GGUF file: unknown metadata value type id {id} at offset {offset} ({context})"
    )]
    UnknownValueType {
        id: u32,
        offset: u64,
        context: String,
    },

    #[error("corrupt GGUF file: invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("corrupt GGUF file: metadata key '{key}' appears twice")]
    DuplicateKey { key: String },

    #[error("tensor name '{name}' appears twice")]
    DuplicateTensor { name: String },

    #[error(
        "invalid '{}': {value}; it must be a non-zero power of two that fits in u32",
        crate::ALIGNMENT_KEY
    )]
    BadAlignment { value: String },

    #[error("corrupt GGUF file: tensor '{name}' occupies bytes {start}..{end} of the file, but the file has {file_len} bytes")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error("corrupt GGUF file: tensor '{name}' has data offset {offset}, which is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{name}': {reason}")]
    BadShape { name: String, reason: String },

    #[error("tensor '{name}' has type {ggml_type}, which this crate cannot {action} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K; the writer quantises all but the k-quants)")]
    UnsupportedType {
        name: String,
        ggml_type: GgmlType,
        action: &'static str,
    },

    #[error("no tensor named '{name}' in the file")]
    TensorNotFound { name: String },

    #[error("tensor '{name}' has {expected} elements, but the output buffer holds {found}")]
    BufferSize {
        name: String,
        expected: usize,
        found: usize,
    },

    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata key '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },

    #[error("metadata key '{key}': value {value} does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },
}

impl GgufError {
    /// The error without the file path that [`GgufError::InFile`] adds; useful to
    /// match on the kind of problem.
    pub fn kind(&self) -> &GgufError {
        match self {
            Self::InFile { error, .. } => error.kind(),
            e => e,
        }
    }
}
