//! A bounded cache of open static files and their metadata, revalidated against the file
//! system at most [`REVALIDATE`] apart.
//!
//! Each entry holds the open file and the validators (ETag, Last-Modified, length) taken from
//! one `fstat` of that same descriptor, so what is announced is what is sent: a file replaced
//! (renamed over) while being sent still goes out whole from the old inode, and the next
//! revalidation picks up the new one. Small files also keep their bytes, read right after the
//! `fstat` and checked against a second one, so their answer is one write.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::negotiate::Coding;

/// How long a cached file is trusted before its path is looked at again ("a changed file is
/// served new within a second").
pub(crate) const REVALIDATE: Duration = Duration::from_millis(500);

/// Files (each with up to three precompressed siblings, so up to four descriptors) kept open
/// per worker.
const MAX_ENTRIES: usize = 512;

/// Files up to this size keep their bytes in memory...
const SMALL_FILE: u64 = 16 * 1024;

/// ...as long as all those bytes together stay under this, per worker.
const BYTES_BUDGET: u64 = 8 * 1024 * 1024;

/// What identifies a file's content on disk: when any of it changes, the file is opened anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// One representation on disk: the file itself or a precompressed sibling.
#[derive(Debug)]
pub(crate) struct Variant {
    pub file: Arc<File>,
    pub len: u64,
    pub modified: SystemTime,
    /// A strong entity tag from the modification time and length (RFC 9110 §8.8.3).
    pub etag: String,
    /// The HTTP-date of `modified` (RFC 9110 §8.8.2).
    pub last_modified: String,
    /// The whole content, for small files.
    pub bytes: Option<Bytes>,
    identity: Identity,
    path: PathBuf,
}

/// A cached file: its own representation and those of its precompressed siblings, indexed by
/// [`Coding::index`], and `M`, what the user of the cache makes of it once (the answers'
/// unchanging parts), made at the first request and dropped with the entry.
#[derive(Debug)]
pub(crate) struct Entry<M> {
    pub plain: Variant,
    pub encoded: [Option<Variant>; 3],
    pub prepared: std::sync::OnceLock<M>,
}

impl<M> Entry<M> {
    pub(crate) fn has_siblings(&self) -> bool {
        self.encoded.iter().any(Option::is_some)
    }

    fn bytes_held(&self) -> u64 {
        std::iter::once(&self.plain)
            .chain(self.encoded.iter().flatten())
            .filter_map(|v| v.bytes.as_ref())
            .map(|b| b.len() as u64)
            .sum()
    }
}

/// What a path under a mapped directory turned out to be.
#[derive(Debug)]
pub(crate) enum Found<M> {
    File(Arc<Entry<M>>),
    Dir,
    Missing,
}

struct Slot<M> {
    entry: Arc<Entry<M>>,
    checked: Instant,
    used: u64,
}

struct Inner<M> {
    slots: HashMap<(usize, String), Slot<M>>,
    tick: u64,
    bytes_held: u64,
}

impl<M> Default for Inner<M> {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            tick: 0,
            bytes_held: 0,
        }
    }
}

/// The cache of one worker, for all its mounts.
pub(crate) struct Cache<M> {
    inner: Mutex<Inner<M>>,
    allow_symlinks: bool,
}

impl<M> std::fmt::Debug for Cache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

impl<M> Cache<M> {
    pub(crate) fn new(allow_symlinks: bool) -> Self {
        Self {
            inner: Mutex::default(),
            allow_symlinks,
        }
    }

    /// Finds `rel` under mount `mount` (whose canonical directory is `root`).
    pub(crate) fn find(&self, mount: usize, root: &Path, rel: &str) -> Found<M> {
        let Ok(mut inner) = self.inner.lock() else {
            return Found::Missing;
        };
        inner.tick += 1;
        let tick = inner.tick;
        let now = Instant::now();
        let key = (mount, rel.to_owned());
        if let Some(slot) = inner.slots.get_mut(&key) {
            slot.used = tick;
            if now.duration_since(slot.checked) < REVALIDATE {
                return Found::File(Arc::clone(&slot.entry));
            }
            if unchanged(&slot.entry) {
                slot.checked = now;
                return Found::File(Arc::clone(&slot.entry));
            }
            let held = slot.entry.bytes_held();
            inner.slots.remove(&key);
            inner.bytes_held = inner.bytes_held.saturating_sub(held);
        }
        let budget = BYTES_BUDGET.saturating_sub(inner.bytes_held);
        let opened = match self.open(root, rel, budget) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Found::Dir,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    log::debug!("static file {rel:?}: {e}");
                }
                return Found::Missing;
            }
        };
        let entry = Arc::new(opened);
        if inner.slots.len() >= MAX_ENTRIES {
            let oldest = inner
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                if let Some(s) = inner.slots.remove(&k) {
                    inner.bytes_held = inner.bytes_held.saturating_sub(s.entry.bytes_held());
                }
            }
        }
        inner.bytes_held += entry.bytes_held();
        inner.slots.insert(
            key,
            Slot {
                entry: Arc::clone(&entry),
                checked: now,
                used: tick,
            },
        );
        Found::File(entry)
    }

    /// Opens `rel` and its siblings. `Ok(None)`: a directory.
    fn open(&self, root: &Path, rel: &str, mut budget: u64) -> io::Result<Option<Entry<M>>> {
        let path = super::mapping::join(root, rel);
        let Some(plain) = self.open_variant(root, path.clone(), "", &mut budget)? else {
            return Ok(None);
        };
        let mut encoded = [None, None, None];
        if !rel.is_empty() {
            for c in Coding::ALL {
                let mut sibling = path.clone().into_os_string();
                sibling.push(c.suffix());
                encoded[c.index()] = self
                    .open_variant(root, sibling.into(), c.suffix(), &mut budget)
                    .ok()
                    .flatten();
            }
        }
        Ok(Some(Entry {
            plain,
            encoded,
            prepared: std::sync::OnceLock::new(),
        }))
    }

    /// Opens one regular file, refusing one reached through a link out of `root`.
    /// `Ok(None)`: a directory. Other kinds of files (FIFOs, devices) are "not found".
    /// `tag` ends its ETag, so that a sibling never shares the file's own.
    fn open_variant(
        &self,
        root: &Path,
        path: PathBuf,
        tag: &str,
        budget: &mut u64,
    ) -> io::Result<Option<Variant>> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Ok(None);
        }
        if !meta.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        if !self.allow_symlinks && !beneath(&file, &path, root)? {
            log::warn!(
                "static file {} leads outside {} (a symbolic link); refused \
                 (--static-allow-symlinks serves it)",
                path.display(),
                root.display()
            );
            return Err(io::ErrorKind::NotFound.into());
        }
        let identity = Identity::of(&meta);
        let len = meta.len();
        let bytes = if len <= SMALL_FILE && len <= *budget {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0)?;
            // Changed while read: not trusted; the descriptor is still sent with sendfile,
            // which at worst sends a short body and closes the connection.
            (Identity::of(&file.metadata()?) == identity).then(|| {
                *budget -= len;
                Bytes::from(buf)
            })
        } else {
            None
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(Variant {
            file: Arc::new(file),
            len,
            modified,
            etag: format!(
                "\"{:x}.{:x}-{:x}{tag}\"",
                identity.mtime, identity.mtime_nsec, len
            ),
            last_modified: httpdate::fmt_http_date(modified),
            bytes,
            identity,
            path,
        }))
    }
}

/// True when nothing about the entry's files changed on disk, siblings appearing or going
/// included.
fn unchanged<M>(entry: &Entry<M>) -> bool {
    let same =
        |v: &Variant| std::fs::metadata(&v.path).is_ok_and(|m| Identity::of(&m) == v.identity);
    if !same(&entry.plain) {
        return false;
    }
    Coding::ALL.iter().all(|c| match &entry.encoded[c.index()] {
        Some(v) => same(v),
        None => {
            let mut p = entry.plain.path.clone().into_os_string();
            p.push(c.suffix());
            std::fs::metadata(PathBuf::from(p)).is_err()
        }
    })
}

/// True when the open `file` really lies under `root` (already canonical): the kernel's name
/// for the descriptor, else the canonical form of the path it was opened by.
fn beneath(file: &File, path: &Path, root: &Path) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))?;
    Ok(real.starts_with(root))
}
