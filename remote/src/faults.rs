//! This defines a fault-injecting object store for tests: a wrapper that
//! numbers every call made through it (from 1, in the order they start),
//! logs them, and by plan fails the n-th, holds it until the test releases
//! it, or breaks the n-th's download after some bytes; and it can ignore
//! create-only puts, as some S3-compatible stores do. Holding is by a
//! gate the test opens, never by time, so a test can stop one writer
//! between its archive and its manifest and let another run meanwhile.
//! Compiled only with the `fault-injection` feature.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use tokio::sync::Notify;

/// A call made through a [`Faulty`] store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The operation: `put`, `put_multipart`, `get` (a head is a get),
    /// `get_ranges`,    /// `delete`, `list`, `list_with_delimiter`, `copy`, `rename`.
    pub op: &'static str,
    /// The object or prefix it named.
    pub path: String,
}

impl Call {
    /// Whether the call can change the store.
    pub fn writes(&self) -> bool {
        matches!(self.op, "put" | "put_multipart" | "delete" | "copy" | "rename")
    }
}

/// What to do to one call.
#[derive(Clone)]
pub enum Fault {
    /// Fail it with a generic store error.
    Fail,
    /// Hold it until the gate is opened (after telling the gate that it
    /// got there), then run it.
    Hold(Arc<Gate>),
    /// Run it, but end its download with an error after this many bytes.
    BreakAfter(u64),
}

/// Where a held call waits: the test waits for [`Gate::reached`], then
/// calls [`Gate::open`].
#[derive(Default)]
pub struct Gate {
    reached: Notify,
    open: Notify,
}

impl Gate {
    /// Waits until a call stops at this gate.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held call go on.
    pub fn open(&self) {
        self.open.notify_one();
    }
}

/// An object store that passes every call to `inner`, numbering and
/// logging it, and injecting the planned faults.
pub struct Faulty<S> {
    inner: S,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    plan: Vec<(usize, Fault)>,
    ignore_create: bool,
}

impl<S: ObjectStore> Faulty<S> {
    /// `inner`, with no faults planned.
    pub fn new(inner: S) -> Faulty<S> {
        Faulty { inner, state: Mutex::new(State::default()) }
    }

    /// Plans `fault` for the `n`-th call from now on counting from the
    /// first call ever made (1-based).
    pub fn plan(&self, n: usize, fault: Fault) {
        self.state().plan.push((n, fault));
    }

    /// Makes create-only puts overwrite, as a store that ignores
    /// `If-None-Match` would (`ignore`), or stops it.
    pub fn ignore_create(&self, ignore: bool) {
        self.state().ignore_create = ignore;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Forgets the calls and the plan (and stops ignoring creates):
    /// numbering starts again at 1.
    pub fn reset(&self) {
        *self.state() = State::default();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a call and returns the fault planned for it.
    fn call(&self, op: &'static str, path: &str) -> Option<Fault> {
        let mut state = self.state();
        state.calls.push(Call { op, path: path.to_owned() });
        let n = state.calls.len();
        state.plan.iter().find(|(at, _)| *at == n).map(|(_, fault)| fault.clone())
    }

    /// Runs the call's fault up to the call itself: an error for
    /// [`Fault::Fail`], a wait for [`Fault::Hold`].
    async fn before(&self, op: &'static str, path: &str) -> Result<Option<u64>> {
        match self.call(op, path) {
            None => Ok(None),
            Some(Fault::Fail) => Err(injected(format!("injected failure of {op} {path}"))),
            Some(Fault::Hold(gate)) => {
                gate.reached.notify_one();
                gate.open.notified().await;
                Ok(None)
            }
            Some(Fault::BreakAfter(bytes)) => Ok(Some(bytes)),
        }
    }
}

fn injected(message: String) -> object_store::Error {
    object_store::Error::Generic { store: "Faulty", source: message.into() }
}

/// `stream`, ending with an error once `limit` bytes have gone through.
fn broken(stream: BoxStream<'static, Result<Bytes>>, limit: u64) -> BoxStream<'static, Result<Bytes>> {
    let mut left = limit;
    let mut done = false;
    stream
        .filter_map(move |chunk| {
            let out = match chunk {
                _ if done => None,
                Ok(bytes) if (bytes.len() as u64) < left => {
                    left -= bytes.len() as u64;
                    Some(Ok(bytes))
                }
                Ok(_) => {
                    done = true;
                    Some(Err(injected(format!("injected break after {limit} bytes"))))
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
        .boxed()
}

impl<S> fmt::Display for Faulty<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Faulty")
    }
}

impl<S> fmt::Debug for Faulty<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Faulty")
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Faulty<S> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, mut opts: PutOptions) -> Result<PutResult> {
        self.before("put", location.as_ref()).await?;
        if self.state().ignore_create && opts.mode == PutMode::Create {
            opts.mode = PutMode::Overwrite;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.before("put_multipart", location.as_ref()).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let limit = self.before("get", location.as_ref()).await?;
        let result = self.inner.get_opts(location, options).await?;
        let Some(limit) = limit else { return Ok(result) };
        let (meta, range) = (result.meta.clone(), result.range.clone());
        let (attributes, extensions) = (result.attributes.clone(), result.extensions.clone());
        // As a stream, so every backend (a file, for the local one) breaks
        // the same way.
        let stream = broken(result.into_stream(), limit);
        Ok(GetResult { payload: GetResultPayload::Stream(stream), meta, range, attributes, extensions })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before("get_ranges", location.as_ref()).await?;
        self.inner.get_ranges(location, ranges).await
    }

    /// A delete is not async up front, so it can fail but not be held.
    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        if let Some(Fault::Fail) = self.call("delete", "") {
            return futures::stream::once(async { Err(injected("injected failure of delete".to_owned())) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.call("list", prefix.map_or("", |p| p.as_ref()));
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before("list_with_delimiter", prefix.map_or("", |p| p.as_ref())).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before("copy", to.as_ref()).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.before("rename", to.as_ref()).await?;
        self.inner.rename_opts(from, to, options).await
    }
}
