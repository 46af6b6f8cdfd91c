//! The reports of `status`: the totals first, then each holder and item.

use safecache::display::size;
use safecache::{Holder, Item, ItemKind, LockMode, LockName};
use serde::Serialize;

use super::{Human, Line};

/// `status`'s totals; for people, the lines above the holders and items.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) path: String,
    pub(crate) format: u32,
    pub(crate) case_insensitive: Option<bool>,
    pub(crate) normalizes_unicode: Option<bool>,
    pub(crate) entries: usize,
    pub(crate) entry_bytes: u64,
    pub(crate) holders: usize,
    pub(crate) orphans: usize,
    pub(crate) trash: usize,
    pub(crate) total_bytes: u64,
    /// The remote tier this command would use (from the options, the
    /// variables and the cache's config; the store is not contacted), or
    /// null for none.
    pub(crate) remote: Option<RemoteSummary>,
    /// Bytes of temps and trash.
    #[serde(skip)]
    pub(crate) item_bytes: u64,
}

/// `status`: the remote tier configured.
#[derive(Debug, Serialize)]
pub(crate) struct RemoteSummary {
    /// The URL, escaped.
    pub(crate) url: String,
    pub(crate) namespace: String,
    /// `read-write` or `read-only`.
    pub(crate) mode: &'static str,
}

impl Summary {
    /// The `remote` field of a summary: `url` (escaped), `namespace` and
    /// `mode`.
    pub(crate) fn remote(url: String, namespace: String, mode: &'static str) -> Option<RemoteSummary> {
        Some(RemoteSummary { url, namespace, mode })
    }
}

impl Human for Summary {
    fn human(&self) -> Vec<Line> {
        let filesystem = match (self.case_insensitive, self.normalizes_unicode) {
            (Some(insensitive), Some(normalizes)) => format!(
                "{}, {}",
                if insensitive { "case-insensitive" } else { "case-sensitive" },
                if normalizes { "normalizes Unicode names" } else { "keeps Unicode names as written" }
            ),
            _ => "not probed".to_owned(),
        };
        vec![
            Line::Out(format!("cache: {} (format {})", self.path, self.format)),
            Line::Out(format!("filesystem: {filesystem}")),
            Line::Out(match &self.remote {
                Some(r) => format!("remote: {} (namespace `{}`, {})", r.url, r.namespace, r.mode),
                None => "remote: none".to_owned(),
            }),
            Line::Out(format!("entries: {} ({})", self.entries, size(self.entry_bytes))),
            Line::Out(format!(
                "orphans: {}, trash: {}, temps and trash: {}, total: {}",
                self.orphans,
                self.trash,
                size(self.item_bytes),
                size(self.total_bytes)
            )),
            Line::Out(if self.holders == 0 { "holders: none".to_owned() } else { "holders:".to_owned() }),
        ]
    }
}

/// `status`: one process holding a lock.
#[derive(Debug, Serialize)]
pub(crate) struct HolderReport {
    lock: LockName,
    lock_file: String,
    mode: LockMode,
    pid: u32,
    /// Quoted as a shell would.
    command: String,
    argv: Vec<String>,
    host: String,
    since: u64,
    /// The holder as people read it.
    #[serde(skip)]
    shown: String,
}

impl From<&Holder> for HolderReport {
    fn from(h: &Holder) -> HolderReport {
        HolderReport {
            lock: h.lock.clone(),
            lock_file: h.lock_file.clone(),
            mode: h.mode,
            pid: h.pid,
            command: h.command.clone(),
            argv: h.argv.clone(),
            host: h.host.clone(),
            since: h.since,
            shown: h.to_string(),
        }
    }
}

impl Human for HolderReport {
    fn human(&self) -> Vec<Line> {
        vec![Line::Out(format!("  {}: {}", self.lock, self.shown))]
    }
}

/// `status`: a temp, a piece of trash or an uncommitted in-place entry.
#[derive(Debug, Serialize)]
pub(crate) struct ItemReport {
    kind: &'static str,
    /// Escaped for display by the core.
    rel: String,
    bytes: u64,
    live: bool,
}

impl From<&Item> for ItemReport {
    fn from(item: &Item) -> ItemReport {
        let kind = match item.kind {
            ItemKind::Temp => "temp",
            ItemKind::Trash => "trash",
            ItemKind::Uncommitted => "uncommitted",
            _ => "other",
        };
        ItemReport { kind, rel: item.rel.clone(), bytes: item.bytes, live: item.live }
    }
}

impl Human for ItemReport {
    fn human(&self) -> Vec<Line> {
        let state = if self.live { "in use".to_owned() } else { crate::hint::orphan() };
        vec![Line::Out(format!("  {} {} ({}, {state})", self.kind, self.rel, size(self.bytes)))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(remote: Option<RemoteSummary>) -> Summary {
        Summary {
            path: "/c".to_owned(),
            format: 1,
            case_insensitive: None,
            normalizes_unicode: None,
            entries: 0,
            entry_bytes: 0,
            holders: 0,
            orphans: 0,
            trash: 0,
            total_bytes: 0,
            remote,
            item_bytes: 0,
        }
    }

    fn remote_line(s: &Summary) -> String {
        s.human()
            .into_iter()
            .find_map(|l| match l {
                Line::Out(text) if text.starts_with("remote: ") => Some(text),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn the_remote_is_one_line_and_a_field() {
        let none = summary(None);
        assert_eq!(remote_line(&none), "remote: none");
        assert_eq!(serde_json::to_value(&none).unwrap()["remote"], serde_json::Value::Null);
        let url = "s3://bucket/ci".to_owned();
        let some = summary(Some(RemoteSummary { url, namespace: "main".to_owned(), mode: "read-only" }));
        assert_eq!(remote_line(&some), "remote: s3://bucket/ci (namespace `main`, read-only)");
        assert_eq!(
            serde_json::to_value(&some).unwrap()["remote"],
            serde_json::json!({"url": "s3://bucket/ci", "namespace": "main", "mode": "read-only"})
        );
    }
}
