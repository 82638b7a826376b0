//! GGUF files for sinkrep: reading, writing, de-quantisation and the tokenizer
//! embedded in a GGUF's metadata.
//!
//! Format reference: the GGUF specification in ggml's `docs/gguf.md` (little-endian;
//! header, metadata key/values, tensor infos, aligned data section). Block layouts
//! follow ggml's `ggml-common.h`; quantisation follows the reference (`*_ref`)
//! routines in `ggml-quants.c`.
//!
//! A file is memory-mapped where the platform allows (module `map`, this crate's one
//! use of `unsafe`), else read into memory. Every count and offset read from the file
//! is checked against the bytes that remain before anything is allocated from it, so
//! corrupt or truncated input yields a [`GgufError`], never a panic or an absurd
//! allocation.

mod error;
mod map;
mod quant;
mod reader;
mod spm;
pub mod tokenizer;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use map::READ_ENV;
pub use reader::{GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::{Value, ValueType};
pub use writer::GgufWriter;

/// Alignment of the tensor data section when `general.alignment` is absent (spec).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The most dimensions a tensor info may declare. ggml itself uses at most 4
/// (`GGML_MAX_DIMS`); anything above this is treated as corruption.
pub const MAX_DIMS: u32 = 8;
