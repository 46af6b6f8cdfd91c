//! The reports of the remote tier's commands: `remote keygen`, `remote
//! check`, `ls --remote`.

use safecache::display::size;
use serde::Serialize;

use super::{Human, Line, ago, json_path};

/// `remote keygen`: the pair written.
#[derive(Debug, Serialize)]
pub(crate) struct KeyPair {
    pub(crate) secret_key: String,
    pub(crate) public_key_file: String,
    /// `ed25519:` and 64 hex digits.
    pub(crate) public_key: String,
}

impl Human for KeyPair {
    fn human(&self) -> Vec<Line> {
        vec![
            Line::Status("Wrote", format!("the secret key `{}` (mode 0600: keep it secret)", self.secret_key)),
            Line::Status("Wrote", format!("the public key `{}`", self.public_key_file)),
            Line::Out(self.public_key.clone()),
        ]
    }
}

impl KeyPair {
    pub(crate) fn new(secret: &std::path::Path, public: &std::path::Path, key: String) -> KeyPair {
        KeyPair { secret_key: json_path(secret), public_key_file: json_path(public), public_key: key }
    }
}

/// `remote check`: the store works.
#[derive(Debug, Serialize)]
pub(crate) struct RemoteChecked {
    /// The URL, escaped.
    pub(crate) url: String,
    pub(crate) namespace: String,
    /// `read-write` or `read-only`.
    pub(crate) mode: &'static str,
    /// Whether the check wrote: the store refused a second create.
    pub(crate) create_exclusive: Option<bool>,
    /// Whether manifests must be signed by a trusted key.
    pub(crate) signed_only: bool,
    /// Whether uploads are signed.
    pub(crate) signs: bool,
    /// The probe object that could not be deleted, if any.
    pub(crate) probe_left: Option<String>,
}

impl Human for RemoteChecked {
    fn human(&self) -> Vec<Line> {
        let writes = match self.create_exclusive {
            Some(true) => "can be written, and refuses a second create of one object (first writer wins)",
            _ => "was not written (read-only)",
        };
        let mut lines = vec![Line::Status(
            "Checked",
            format!("{} (namespace `{}`, {}): readable; {writes}", self.url, self.namespace, self.mode),
        )];
        lines.push(Line::Out(format!(
            "trust: {}; uploads: {}",
            if self.signed_only { "manifests signed by a trusted key only" } else { "any manifest (no trusted keys)" },
            if self.mode == "read-only" {
                "none"
            } else if self.signs {
                "signed"
            } else {
                "unsigned"
            }
        )));
        if let Some(probe) = &self.probe_left {
            lines.push(Line::Warn(format!("the probe object `{probe}` could not be deleted; delete it by hand")));
        }
        lines
    }
}

/// `ls --remote`: one key with a manifest in the store.
#[derive(Debug, Serialize)]
pub(crate) struct RemoteListed {
    pub(crate) key: String,
    pub(crate) manifest_bytes: u64,
    /// When the store says the manifest was written, in seconds since the
    /// Unix epoch.
    pub(crate) modified: i64,
}

impl Human for RemoteListed {
    fn human(&self) -> Vec<Line> {
        let when = u64::try_from(self.modified)
            .ok()
            .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
        vec![Line::Out(format!("{}  {}  uploaded {}", self.key, size(self.manifest_bytes), ago(when)))]
    }
}

/// What a command's transfers did, for its JSON report.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Moved {
    /// `hit`, `miss`, `error`, or null when it did not look.
    pub(crate) fetch: Option<&'static str>,
    pub(crate) bytes_downloaded: u64,
    /// `published`, `already-there`, `error`, `skipped`, or null.
    pub(crate) upload: Option<&'static str>,
    pub(crate) bytes_uploaded: u64,
    pub(crate) millis: u64,
}
