//! This defines the `file://` store as the remote tier opens it:
//! object_store's `LocalFileSystem`, except that an object is read only if
//! it is a regular file. `LocalFileSystem` opens an object by its path,
//! following a symlink and blocking on a FIFO, so one FIFO that anyone with
//! write access to a shared directory puts in place of a manifest would hold
//! every reader until its timeout. The check is an `lstat` just before the
//! open: an object swapped for a FIFO in between still costs a reader its
//! timeout, never more (the CLI abandons a transfer at its timeout, without
//! waiting for the blocked thread).

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// `LocalFileSystem` that reads regular files only.
pub(crate) struct RegularFiles {
    inner: LocalFileSystem,
}

impl RegularFiles {
    /// The local filesystem from its root, as a `file://` URL names it.
    pub(crate) fn new() -> RegularFiles {
        RegularFiles { inner: LocalFileSystem::new() }
    }

    /// Refuses an object that is not a regular file (a FIFO, a device, a
    /// socket, a directory, a symlink), before anything opens it.
    fn check(&self, location: &Path) -> Result<()> {
        let path = self.inner.path_to_filesystem(location)?;
        let refused = |reason: String| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("`{}` {reason}", safecache::display::escape(&path.to_string_lossy())).into(),
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(()),
            Ok(meta) => Err(refused(format!("is a {}, not a regular file", kind(meta.file_type())))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(object_store::Error::NotFound { path: location.to_string(), source: Box::new(e) })
            }
            Err(e) => Err(refused(format!("cannot be inspected: {e}"))),
        }
    }
}

/// A file type's name, for people.
fn kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

impl fmt::Display for RegularFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegularFiles({})", self.inner)
    }
}

impl fmt::Debug for RegularFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegularFiles").field("inner", &self.inner).finish()
    }
}

#[async_trait]
impl ObjectStore for RegularFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
