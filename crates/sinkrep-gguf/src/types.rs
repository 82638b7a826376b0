//! ggml tensor types: numeric ids, names and block layouts (ggml's `ggml.h` and
//! `ggml-common.h`).

use std::fmt;

/// A ggml tensor element type. Ids that ggml has never assigned (or has retired)
/// are kept as [`GgmlType::Other`], so that a file using one still opens and the
/// error for reading such a tensor can name the id.
#[allow(non_camel_case_types)] // the names are ggml's own (Q4_0, Q8_K...)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    /// An id this crate does not know (or one ggml has retired, e.g. 4, 5, 31-33).
    Other(u32),
}

/// (type, id, name, values per block, bytes per block). Block sizes from
/// `ggml-common.h`; they let the reader bounds-check tensors it cannot decode.
const TABLE: &[(GgmlType, u32, &str, u64, u64)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    // block_q8_1: two f16 (d, s) + 32 i8 (static_assert in ggml-common.h).
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
];

/// Names of ids ggml once assigned and later removed; kept so errors stay readable.
const RETIRED: &[(u32, &str)] = &[
    (4, "Q4_2 (removed from ggml)"),
    (5, "Q4_3 (removed from ggml)"),
    (31, "Q4_0_4_4 (removed from ggml)"),
    (32, "Q4_0_4_8 (removed from ggml)"),
    (33, "Q4_0_8_8 (removed from ggml)"),
    (36, "IQ4_NL_4_4 (removed from ggml)"),
    (37, "IQ4_NL_4_8 (removed from ggml)"),
    (38, "IQ4_NL_8_8 (removed from ggml)"),
];

impl GgmlType {
    /// The type for a numeric id read from a file (never fails: see [`GgmlType::Other`]).
    pub fn from_id(id: u32) -> Self {
        TABLE
            .iter()
            .find(|e| e.1 == id)
            .map_or(Self::Other(id), |e| e.0)
    }

    fn entry(self) -> Option<&'static (GgmlType, u32, &'static str, u64, u64)> {
        TABLE.iter().find(|e| e.0 == self)
    }

    /// The numeric id written to a file.
    pub fn id(self) -> u32 {
        match self {
            Self::Other(id) => id,
            t => t.entry().map_or(u32::MAX, |e| e.1),
        }
    }

    /// ggml's name for the type (`Q4_1`), or a description of an unknown id.
    pub fn name(self) -> String {
        match self {
            Self::Other(id) => match RETIRED.iter().find(|r| r.0 == id) {
                Some((_, name)) => format!("{name}, id {id}"),
                None => format!("unknown ggml type id {id}"),
            },
            t => t.entry().map_or_else(String::new, |e| e.2.to_string()),
        }
    }

    /// `(values per block, bytes per block)`, when the layout is known.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        self.entry().map(|e| (e.3, e.4))
    }

    /// Whether [`crate::GgufFile::tensor_f32`] can decode this type. The writer encodes
    /// the supported types except the k-quants (Q4_K, Q6_K), which it takes as raw bytes.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q8_0
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q4_K
                | Self::Q6_K
        )
    }
}

impl GgmlType {
    /// Whether [`crate::GgufWriter::add_tensor_f32`] can quantise to this type: the
    /// decodable types but the k-quants (their reference quantisers search for scales).
    pub fn is_encodable(self) -> bool {
        self.is_supported() && !matches!(self, Self::Q4_K | Self::Q6_K)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
