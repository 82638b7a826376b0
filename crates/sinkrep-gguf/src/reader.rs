//! Parsing a GGUF file (spec: ggml `docs/gguf.md`, versions 2 and 3).

use std::collections::HashMap;
use std::path::Path;

use crate::map::{self, Bytes};
use crate::quant;
use crate::{GgmlType, GgufError, Value, ValueType, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS};

type Result<T> = std::result::Result<T, GgufError>;

/// Deepest nesting of arrays inside arrays that we accept. Real files use at most 1;
/// the limit keeps a hostile file from overflowing the stack through recursion.
const MAX_ARRAY_NESTING: u32 = 8;

/// The fewest bytes one metadata key/value can take: key length (u64), value type
/// (u32), and a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// The fewest bytes one tensor info can take: name length (u64), n_dims (u32),
/// type (u32), offset (u64).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// Description of one tensor, as listed in the file's tensor infos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape: the file's dims (innermost first) reversed, so
    /// `token_embd.weight` is `(vocab, d_model)`.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (product of the shape; 1 for a 0-dimensional tensor).
    pub fn n_elements(&self) -> usize {
        // Checked when the file was parsed, so the product cannot overflow.
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes, when its type's block layout is known.
    pub fn n_bytes(&self) -> Option<u64> {
        let (block, size) = self.ggml_type.block_layout()?;
        Some((self.n_elements() as u64 / block) * size)
    }
}

/// A whole GGUF file held in memory, with its metadata and tensor infos parsed and
/// validated (every tensor with a known type lies inside the file).
#[derive(Debug, Clone)]
pub struct GgufFile {
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl GgufFile {
    /// Maps (or reads: see [`crate::READ_ENV`]) and parses the file at `path`. Errors
    /// carry the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), !map::read_requested())
    }

    /// Reads the whole file at `path` into memory and parses it (never a map: for a file
    /// that may change while it is in use). Errors carry the path.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, may_map: bool) -> Result<Self> {
        let bytes = map::open(path, may_map).map_err(|error| GgufError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(bytes).map_err(|e| GgufError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// Whether the file's bytes are a memory map of it (see [`GgufFile::open`]).
    pub fn is_mapped(&self) -> bool {
        self.bytes.is_mapped()
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<Self> {
        let (header, tensor_index, key_index) = parse_and_index(&bytes)?;
        Ok(Self {
            bytes,
            version: header.version,
            metadata: header.metadata,
            key_index,
            tensors: header.tensors,
            tensor_index,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    /// Runs every check [`GgufFile::from_bytes`] runs (header, metadata, tensor infos,
    /// bounds, duplicates) on borrowed bytes, without keeping anything: for callers (the
    /// corruption fuzz test) that check many variants of one large buffer.
    pub fn validate(bytes: &[u8]) -> Result<()> {
        parse_and_index(bytes).map(|_| ())
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset at which the data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The raw file contents.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// All metadata key/values, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The metadata value for `key`, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// `general.architecture` (e.g. `llama`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// `<architecture>.<suffix>`, e.g. `arch_key("block_count")` is
    /// `llama.block_count` for a LLaMA file.
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        Ok(format!("{}.{suffix}", self.architecture()?))
    }

    /// Any integer value that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        int_as(key, self.require(key)?, "u32", Value::as_u32)
    }

    /// Like [`GgufFile::get_u32`], but `Ok(None)` when the key is absent.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| int_as(key, v, "u32", Value::as_u32))
            .transpose()
    }

    /// Any integer value that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        int_as(key, self.require(key)?, "u64", Value::as_u64)
    }

    /// Any integer value that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        int_as(key, self.require(key)?, "i64", Value::as_i64)
    }

    /// An `f32` value, or an `f64` value rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32()
            .ok_or_else(|| wrong_type(key, "a float (f32 or f64)", v))
    }

    /// Like [`GgufFile::get_f32`], but `Ok(None)` when the key is absent.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.get(key)
            .map(|v| {
                v.as_f32()
                    .ok_or_else(|| wrong_type(key, "a float (f32 or f64)", v))
            })
            .transpose()
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, "bool", v))
    }

    /// Like [`GgufFile::get_bool`], but `Ok(None)` when the key is absent.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong_type(key, "bool", v)))
            .transpose()
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// Like [`GgufFile::get_str`], but `Ok(None)` when the key is absent.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| wrong_type(key, "string", v)))
            .transpose()
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let items = self.array_of(key, ValueType::Str, "array of string")?;
        Ok(items.iter().filter_map(Value::as_str).collect())
    }

    /// An array of integers that all fit in `i32` (any integer element type).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let v = self.require(key)?;
        let items = match v {
            Value::Array(t, items) if is_integer(*t) => items,
            _ => return Err(wrong_type(key, "array of integers", v)),
        };
        items
            .iter()
            .map(|x| {
                x.as_i32().ok_or_else(|| GgufError::OutOfRange {
                    key: key.to_string(),
                    value: describe_scalar(x),
                    target: "i32",
                })
            })
            .collect()
    }

    /// An array of `f32` (or `f64`, rounded to `f32`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.require(key)?;
        match v {
            Value::Array(ValueType::F32 | ValueType::F64, items) => {
                Ok(items.iter().filter_map(Value::as_f32).collect())
            }
            _ => Err(wrong_type(key, "array of f32 or f64", v)),
        }
    }

    fn array_of(&self, key: &str, t: ValueType, expected: &str) -> Result<&[Value]> {
        let v = self.require(key)?;
        match v {
            Value::Array(et, items) if *et == t => Ok(items),
            _ => Err(wrong_type(key, expected, v)),
        }
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::TensorNotFound {
                name: name.to_string(),
            })
    }

    /// The raw (possibly quantised) bytes of a tensor whose type has a known layout.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        let n_bytes = info.n_bytes().ok_or_else(|| GgufError::UnsupportedType {
            name: info.name.clone(),
            ggml_type: info.ggml_type,
            action: "locate (unknown block layout)",
        })?;
        let out_of_bounds = || GgufError::TensorOutOfBounds {
            name: info.name.clone(),
            start: self.data_start.saturating_add(info.offset),
            end: self
                .data_start
                .saturating_add(info.offset)
                .saturating_add(n_bytes),
            file_len: self.bytes.len() as u64,
        };
        // Validated at parse time; checked again so that no index can panic.
        let start = self
            .data_start
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(out_of_bounds)?;
        let len = usize::try_from(n_bytes).map_err(|_| out_of_bounds())?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(out_of_bounds)
    }

    /// De-quantises a tensor to `f32`, in row-major order (see [`TensorInfo::shape`]).
    /// Supported types: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name)?;
        // Check the type first: only then is the element count backed by bytes
        // that exist, and so safe to allocate.
        Self::check_decodable(info)?;
        let mut out = vec![0.0f32; info.n_elements()];
        self.tensor_f32_into(name, &mut out)?;
        Ok(out)
    }

    /// De-quantises a tensor into `out`, whose length must equal the tensor's
    /// element count.
    pub fn tensor_f32_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let info = self.tensor_info(name)?;
        Self::check_decodable(info)?;
        if out.len() != info.n_elements() {
            return Err(GgufError::BufferSize {
                name: info.name.clone(),
                expected: info.n_elements(),
                found: out.len(),
            });
        }
        let bytes = self.tensor_bytes(name)?;
        quant::dequantize(info.ggml_type, bytes, out).map_err(|reason| GgufError::BadShape {
            name: info.name.clone(),
            reason,
        })
    }

    /// Every check `tensor_f32_into` makes before it writes, without writing: `Ok` means
    /// de-quantising the tensor into a buffer of its element count cannot fail (so a
    /// loader can check every tensor before it overwrites anything).
    pub fn check_tensor_f32(&self, name: &str) -> Result<()> {
        let info = self.tensor_info(name)?;
        Self::check_decodable(info)?;
        let bytes = self.tensor_bytes(name)?;
        quant::check_len(info.ggml_type, bytes.len(), info.n_elements()).map_err(|reason| {
            GgufError::BadShape {
                name: info.name.clone(),
                reason,
            }
        })
    }

    fn check_decodable(info: &TensorInfo) -> Result<()> {
        if info.ggml_type.is_supported() {
            Ok(())
        } else {
            Err(GgufError::UnsupportedType {
                name: info.name.clone(),
                ggml_type: info.ggml_type,
                action: "de-quantise",
            })
        }
    }
}

fn is_integer(t: ValueType) -> bool {
    matches!(
        t,
        ValueType::U8
            | ValueType::I8
            | ValueType::U16
            | ValueType::I16
            | ValueType::U32
            | ValueType::I32
            | ValueType::U64
            | ValueType::I64
    )
}

fn describe_scalar(v: &Value) -> String {
    match v.as_i128() {
        Some(i) => format!("{i} ({})", v.value_type()),
        None => v.type_description(),
    }
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected: expected.to_string(),
        found: found.type_description(),
    }
}

fn int_as<T>(key: &str, v: &Value, target: &'static str, f: fn(&Value) -> Option<T>) -> Result<T> {
    if v.as_i128().is_none() {
        return Err(wrong_type(
            key,
            &format!("an integer (fitting {target})"),
            v,
        ));
    }
    f(v).ok_or_else(|| GgufError::OutOfRange {
        key: key.to_string(),
        value: describe_scalar(v),
        target,
    })
}

/// What [`parse`] extracts from the bytes.
struct Header {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: u64,
}

/// Reads little-endian items from a byte slice, never past its end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                available,
            });
        }
        // n <= remaining, which is a usize.
        let end = self.pos + n as usize;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len_offset = self.offset();
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Absurd {
                what: format!("length of {}", what()),
                value: len,
                offset: len_offset,
                reason: format!("only {} bytes remain in the file", self.remaining()),
            });
        }
        let start = self.offset();
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }

    /// A count of items that each need at least `min_item_bytes`; rejected when
    /// the items could not possibly fit in the rest of the file.
    fn count(&mut self, min_item_bytes: u64, what: &dyn Fn() -> String) -> Result<u64> {
        let offset = self.offset();
        let n = self.u64(what)?;
        let remaining = self.remaining();
        match n.checked_mul(min_item_bytes) {
            Some(needed) if needed <= remaining => Ok(n),
            _ => Err(GgufError::Absurd {
                what: what(),
                value: n,
                offset,
                reason: format!(
                    "{n} items of at least {min_item_bytes} bytes each cannot fit in the {remaining} bytes that remain"
                ),
            }),
        }
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType> {
        let offset = self.offset();
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            id,
            offset,
            context: what(),
        })
    }

    fn value(&mut self, t: ValueType, depth: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match t {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let offset = self.offset();
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::Absurd {
                            what: what(),
                            value: b.into(),
                            offset,
                            reason: "a bool must be 0 or 1".to_string(),
                        })
                    }
                }
            }
            ValueType::Str => Value::Str(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(GgufError::Absurd {
                        what: format!("array nesting depth of {}", what()),
                        value: depth.into(),
                        offset: self.offset(),
                        reason: format!("at most {MAX_ARRAY_NESTING} levels are accepted"),
                    });
                }
                let et = self.value_type(&|| format!("element type of {}", what()))?;
                let n = self.count(et.min_encoded_size(), &|| {
                    format!("element count of {} (array of {et})", what())
                })?;
                // `count` bounded n by the remaining bytes, so this allocation is
                // at most a small multiple of the file size.
                let mut items = Vec::with_capacity(n as usize);
                for i in 0..n {
                    items
                        .push(self.value(et, depth + 1, &|| format!("element {i} of {}", what()))?);
                }
                Value::Array(et, items)
            }
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }
}

/// The parsed header and the name -> position indexes of tensors and metadata keys,
/// refusing duplicate names.
type Indexed = (Header, HashMap<String, usize>, HashMap<String, usize>);

fn parse_and_index(bytes: &[u8]) -> Result<Indexed> {
    let header = parse(bytes)?;
    let mut tensor_index = HashMap::with_capacity(header.tensors.len());
    for (i, t) in header.tensors.iter().enumerate() {
        if tensor_index.insert(t.name.clone(), i).is_some() {
            return Err(GgufError::DuplicateTensor {
                name: t.name.clone(),
            });
        }
    }
    let mut key_index = HashMap::with_capacity(header.metadata.len());
    for (i, (k, _)) in header.metadata.iter().enumerate() {
        if key_index.insert(k.clone(), i).is_some() {
            return Err(GgufError::DuplicateKey { key: k.clone() });
        }
    }
    Ok((header, tensor_index, key_index))
}

fn parse(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".to_string())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".to_string())?;
    if version != 2 && version != 3 {
        let hint = match version {
            1 => " (version 1 used 32-bit counts and is obsolete)",
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => " (a big-endian file?)",
            _ => "",
        };
        return Err(GgufError::UnsupportedVersion { version, hint });
    }
    let n_tensors = c.count(MIN_TENSOR_INFO_BYTES, &|| "tensor count".to_string())?;
    let n_kv = c.count(MIN_KV_BYTES, &|| "metadata key/value count".to_string())?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let what = || format!("value of metadata '{key}'");
        let t = c.value_type(&|| format!("type of metadata '{key}'"))?;
        let value = c.value(t, 0, &what)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u32() {
            Some(a) if a.is_power_of_two() => u64::from(a),
            _ => {
                return Err(GgufError::BadAlignment {
                    value: format!("{v:?}"),
                })
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor info {i}"))?;
        let ctx = |field: &str| format!("{field} of tensor '{name}'");
        let dims_offset = c.offset();
        let n_dims = c.u32(&|| ctx("n_dims"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::Absurd {
                what: ctx("n_dims"),
                value: n_dims.into(),
                offset: dims_offset,
                reason: format!("at most {MAX_DIMS} dimensions are accepted"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| ctx(&format!("dimension {d}")))?);
        }
        let type_id = c.u32(&|| ctx("type"))?;
        let offset = c.u64(&|| ctx("data offset"))?;
        let ggml_type = GgmlType::from_id(type_id);
        let shape = checked_shape(&name, &dims, ggml_type, buf.len() as u64)?;
        tensors.push(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
        });
    }

    let data_start = c
        .offset()
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| GgufError::BadAlignment {
            value: alignment.to_string(),
        })?;
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        // Unknown layouts have unknown sizes: at least the start must be in the file.
        let n_bytes = t.n_bytes().unwrap_or(0);
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= buf.len() as u64 => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: data_start.saturating_add(t.offset),
                    end: data_start.saturating_add(t.offset).saturating_add(n_bytes),
                    file_len: buf.len() as u64,
                })
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// Validates the dims of a tensor info and returns the row-major shape.
fn checked_shape(name: &str, dims: &[u64], t: GgmlType, file_len: u64) -> Result<Vec<usize>> {
    let bad = |reason: String| GgufError::BadShape {
        name: name.to_string(),
        reason,
    };
    // Zero dims are skipped so that no partial product of the shape (as computed by
    // `TensorInfo::n_elements`, in any order) can overflow.
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| {
            bad(format!(
                "dims {dims:?} multiply to more elements than can be addressed"
            ))
        })?;
    let n: u64 = dims.iter().product();
    if let Some((block, size)) = t.block_layout() {
        // ggml requires whole blocks along the innermost dimension.
        let inner = dims.first().copied().unwrap_or(1);
        if !inner.is_multiple_of(block) {
            return Err(bad(format!(
                "innermost dimension {inner} is not a multiple of the {t} block size {block}"
            )));
        }
        let n_bytes = (n / block).checked_mul(size);
        if n_bytes.is_none_or(|b| b > file_len) {
            return Err(bad(format!(
                "dims {dims:?} of type {t} need more bytes than the whole file ({file_len})"
            )));
        }
    }
    // Each dim fits in usize because the product of the non-zero dims does.
    dims.iter()
        .rev()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} is too large"))))
        .collect()
}
