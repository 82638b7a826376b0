//! Building GGUF files in memory (version 3 by default), mainly for tests.

use std::path::Path;

use crate::quant;
use crate::{GgmlType, GgufError, Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT};

type Result<T> = std::result::Result<T, GgufError>;

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    /// Innermost first, as written to the file.
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then serialises them as a GGUF file.
///
/// The data section alignment is taken from a `general.alignment` metadata entry
/// when one was added, else 32. Tensors are laid out in the order they were added.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The version number written in the header (2 and 3 share the same layout;
    /// other numbers produce files that readers reject, which tests may want).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Adds a metadata entry, replacing any earlier one with the same key.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        let key = key.into();
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds a tensor from f32 values in row-major order, encoding it as `ggml_type`
    /// (F32, F16, BF16, or quantised Q8_0/Q4_0/Q4_1/Q5_0 with ggml's reference
    /// quantisation; k-quants go through `add_tensor_raw`).
    pub fn add_tensor_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        data: &[f32],
    ) -> Result<&mut Self> {
        if !ggml_type.is_encodable() {
            return Err(GgufError::UnsupportedType {
                name: name.to_string(),
                ggml_type,
                action: "quantise",
            });
        }
        let n = self.check_shape(name, shape, ggml_type)?;
        if data.len() as u64 != n {
            return Err(GgufError::BadShape {
                name: name.to_string(),
                reason: format!(
                    "shape {shape:?} has {n} elements, but {} values were given",
                    data.len()
                ),
            });
        }
        let bytes = quant::quantize(ggml_type, data).map_err(|reason| GgufError::BadShape {
            name: name.to_string(),
            reason,
        })?;
        self.push(name, shape, ggml_type, bytes);
        Ok(self)
    }

    /// Adds a tensor from already-encoded bytes of any type. When the type's block
    /// layout is known the byte count is checked against the shape; for
    /// [`GgmlType::Other`] it is written as given.
    pub fn add_tensor_raw(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<&mut Self> {
        let n = self.check_shape(name, shape, ggml_type)?;
        if let Some((block, size)) = ggml_type.block_layout() {
            let expected = n / block * size;
            if bytes.len() as u64 != expected {
                return Err(GgufError::BadShape {
                    name: name.to_string(),
                    reason: format!(
                        "shape {shape:?} of type {ggml_type} needs {expected} bytes, but {} were given",
                        bytes.len()
                    ),
                });
            }
        }
        self.push(name, shape, ggml_type, bytes);
        Ok(self)
    }

    fn push(&mut self, name: &str, shape: &[usize], ggml_type: GgmlType, data: Vec<u8>) {
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            data,
        });
    }

    /// Checks name uniqueness, rank and block divisibility; returns the element count.
    fn check_shape(&self, name: &str, shape: &[usize], t: GgmlType) -> Result<u64> {
        let bad = |reason: String| GgufError::BadShape {
            name: name.to_string(),
            reason,
        };
        if self.tensors.iter().any(|p| p.name == name) {
            return Err(GgufError::DuplicateTensor {
                name: name.to_string(),
            });
        }
        if shape.len() > crate::MAX_DIMS as usize {
            return Err(bad(format!("{} dimensions is too many", shape.len())));
        }
        let n = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        if let Some((block, _)) = t.block_layout() {
            let inner = shape.last().copied().unwrap_or(1) as u64;
            if !inner.is_multiple_of(block) {
                return Err(bad(format!(
                    "row length {inner} is not a multiple of the {t} block size {block}"
                )));
            }
        }
        Ok(n)
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => match v.as_u32() {
                Some(a) if a.is_power_of_two() => Ok(a.into()),
                _ => Err(GgufError::BadAlignment {
                    value: format!("{v:?}"),
                }),
            },
        }
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let alignment = self.alignment()?;
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            out.extend(value.value_type().id().to_le_bytes());
            write_value(&mut out, key, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
        }
        let pad_to = |out: &mut Vec<u8>| {
            let len = (out.len() as u64).next_multiple_of(alignment);
            out.resize(len as usize, 0);
        };
        // Padding goes before each tensor's data, none after the last: the file
        // ends where the last tensor does, so every shorter prefix is invalid.
        for t in &self.tensors {
            pad_to(&mut out);
            out.extend(&t.data);
        }
        Ok(out)
    }

    /// Serialises the file and writes it to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|error| GgufError::Io {
            path: path.to_path_buf(),
            error,
        })
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Writes a value without its type tag (the caller writes the tag, or the array's
/// element type covers it).
fn write_value(out: &mut Vec<u8>, key: &str, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => out.extend(x.to_le_bytes()),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::Str(s) => write_str(out, s),
        Value::Array(t, items) => {
            out.extend(t.id().to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                if item.value_type() != *t {
                    return Err(GgufError::WrongType {
                        key: key.to_string(),
                        expected: format!("array elements of type {t}"),
                        found: item.type_description(),
                    });
                }
                write_value(out, key, item)?;
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
    Ok(())
}
