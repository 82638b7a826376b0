//! Canonical JSON: sorted keys at every depth, pretty-printed, a final newline.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Rebuilds a JSON value with object keys in sorted order at every depth, whatever map
/// type serde_json was built with (`preserve_order` keeps insertion order).
pub(crate) fn canonical_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, canonical_json(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical_json).collect()),
        other => other,
    }
}

/// Pretty JSON with sorted keys and a final newline. Non-finite floats become `null`.
pub(crate) fn json_bytes<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).map_err(|e| Error::Json {
        path: PathBuf::from(what),
        source: e,
    })?;
    let mut s = serde_json::to_string_pretty(&canonical_json(v)).map_err(|e| Error::Json {
        path: PathBuf::from(what),
        source: e,
    })?;
    s.push('\n');
    Ok(s.into_bytes())
}
