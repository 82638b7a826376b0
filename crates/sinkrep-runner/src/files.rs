//! Hashing of input files, cached within the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use crate::error::{io_err, Result};
use crate::manifest::FileRecord;

/// (canonical path, size, mtime) of a file whose hash is cached.
type HashKey = (PathBuf, u64, SystemTime);

/// Cache of input hashes for this process, so a large model used by several
/// replications is hashed once per `sinkrep run`.
fn hash_cache() -> &'static Mutex<HashMap<HashKey, String>> {
    static CACHE: OnceLock<Mutex<HashMap<HashKey, String>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Hashes a file, reusing the hash computed earlier in this process when the file's
/// path, size and modification time are unchanged.
pub fn cached_file_record(path: &Path) -> Result<FileRecord> {
    let canon = path.canonicalize().map_err(io_err(path))?;
    let md = std::fs::metadata(&canon).map_err(io_err(path))?;
    let mtime = md.modified().map_err(io_err(path))?;
    let key = (canon, md.len(), mtime);
    if let Some(sha) = hash_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(FileRecord {
            sha256: sha,
            size: md.len(),
        });
    }
    let sha = sinkrep_inputs::sha256_file(path)?;
    if let Ok(mut c) = hash_cache().lock() {
        c.insert(key, sha.clone());
    }
    Ok(FileRecord {
        sha256: sha,
        size: md.len(),
    })
}
