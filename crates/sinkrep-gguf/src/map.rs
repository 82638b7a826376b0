//! The bytes of an opened GGUF file: a read-only memory map of it where the platform
//! has one, else the file read into memory.
//!
//! A model file is read once, to de-quantise its tensors into the model's own memory.
//! Reading it first copies every byte into fresh anonymous memory: for SmolLM2-135M Q4_1
//! (98 MB) 24,019 minor page faults and 0.04 s of system time on a cached file, against
//! 463 faults and 0.002 s for a map of it (python, read vs mmap, this project's Xeon),
//! and on virtual machines whose fresh pages are slow the difference grows several-fold.
//! gguf-py (`numpy.memmap`), llama.cpp and safetensors map their files too.
//!
//! Mapped bytes are validated exactly as read ones. What a map cannot guard against is
//! another process changing the file while it is open: a page past a truncated end
//! raises SIGBUS, and rewritten bytes show through. `SINKREP_GGUF_READ=1` (or
//! `GgufFile::read`) reads the file into memory instead, for files that may change while
//! a run uses them.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// Set to `1` to read files instead of mapping them (see the module docs).
pub const READ_ENV: &str = "SINKREP_GGUF_READ";

/// A file's bytes, owned or mapped; cloning a mapped one shares the map.
#[derive(Debug, Clone)]
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    #[cfg(unix)]
    Mapped(Arc<Map>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            #[cfg(unix)]
            Bytes::Mapped(m) => m.as_slice(),
        }
    }
}

impl Bytes {
    pub(crate) fn is_mapped(&self) -> bool {
        !matches!(self, Bytes::Owned(_))
    }
}

/// Whether the environment asks for files to be read, not mapped ([`READ_ENV`] is `1`).
pub(crate) fn read_requested() -> bool {
    std::env::var_os(READ_ENV).is_some_and(|v| v == "1")
}

/// The bytes of the file at `path`: with `may_map`, a map of it when it is a non-empty
/// regular file on a filesystem that can map; else its contents read into memory.
pub(crate) fn open(path: &Path, may_map: bool) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    #[cfg(unix)]
    if may_map {
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > 0 {
            if let Ok(len) = usize::try_from(meta.len()) {
                // Some FUSE and network filesystems cannot map: those files are read.
                if let Ok(m) = Map::new(&file, len) {
                    return Ok(Bytes::Mapped(Arc::new(m)));
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = may_map;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut bytes)?;
    Ok(Bytes::Owned(bytes))
}

/// A private read-only map of a whole file, unmapped on drop.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct Map {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the map is read-only and owned by this value alone; sharing `&[u8]` views of it
// across threads is as safe as sharing any immutable byte slice.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Send for Map {}
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Sync for Map {}

#[cfg(unix)]
impl Map {
    #[allow(unsafe_code)]
    fn new(file: &File, len: usize) -> std::io::Result<Map> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of `len` > 0 bytes of an
        // open file descriptor, read-only and private: it aliases no Rust memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast::<u8>().cast_const(),
            len,
        })
    }

    #[allow(unsafe_code)]
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a live read-only mapping of `len` bytes, unmapped
        // only when `self` drops, after every borrow of it has ended.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(unix)]
impl Drop for Map {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast_mut().cast::<libc::c_void>(), self.len);
        }
    }
}
