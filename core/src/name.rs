//! This defines how a key becomes the name of its entry at the cache root
//! (format 3), and how older formats spelled it.
//!
//! Invariant: [`encode`] is injective, and its names are made of lowercase
//! ASCII letters, digits and `. - _ + @` only. Two keys therefore never
//! share a directory, even on a filesystem that folds case (APFS, ext4
//! casefold, SMB) or normalizes Unicode (APFS stores NFD): every byte of a
//! name is one that folding and normalization leave alone. No name has a
//! `%`, `:`, whitespace or shell metacharacter, so an entry path works as
//! lld's output directory, inside a `file://` URL, in `PATH` and in a
//! Makefile.
//!
//! The code, byte by byte (docs/PROTOCOL.md has the table):
//! - `a`-`z`, `0`-`9`, `.`, `-`, `_` stand for themselves;
//! - `/` is `+`;
//! - an uppercase letter is `@` and the letter in lowercase (`Lib` is `@lib`);
//! - any other byte is `@@` and two lowercase hex digits (a space is `@@20`).
//!
//! A name that would start with `.` or `-`, end with `.`, or be one of the
//! [reserved](is_reserved) names has its first (or last) byte written as
//! `@@xx` instead, which maps it apart: the decoder reads either spelling,
//! and [`decode`] accepts only the one [`encode`] writes. So a key that is
//! already a safe name keeps exactly that name.

/// Whether `b` stands for itself in a name.
fn is_plain(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

/// Names a filesystem, an operating system or a file-sharing protocol owns
/// at the root of a volume, or that Windows (and so SMB shares served by it)
/// refuses. Nothing safecache writes is ever one of them, and listings of
/// the root skip them (see [`is_filesystem_owned`]).
fn is_reserved(name: &str) -> bool {
    if name == "lost+found" {
        return true;
    }
    // Windows device names, with or without an extension.
    let stem = name.split('.').next().unwrap_or(name);
    matches!(stem, "con" | "prn" | "aux" | "nul")
        || (stem.len() == 4
            && (stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.as_bytes()[3].is_ascii_digit())
}

/// Writes one byte in its escaped form.
fn escaped(b: u8, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "@@{b:02x}");
}

/// The name of `key`'s entry at the cache root in format 3. `key` must be a
/// valid key (no empty component, no NUL); the result is never empty, `.`,
/// `..`, a reserved name or a name starting with `.` or `-`.
pub(crate) fn encode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = String::with_capacity(bytes.len() + 8);
    let last = bytes.len().saturating_sub(1);
    // Reserved names are short, plain and lowercase: decide before writing.
    let reserved = is_reserved(&key.replace('/', "+"));
    for (i, &b) in bytes.iter().enumerate() {
        let edge_dot = b == b'.' && (i == 0 || i == last);
        let lead_dash = b == b'-' && i == 0;
        if (i == 0 && reserved) || edge_dot || lead_dash {
            escaped(b, &mut out);
        } else if is_plain(b) {
            out.push(char::from(b));
        } else if b == b'/' {
            out.push('+');
        } else if b.is_ascii_uppercase() {
            out.push('@');
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            escaped(b, &mut out);
        }
    }
    out
}

/// The key whose entry `name` is, if `name` is exactly what [`encode`]
/// writes for a valid key. A name in any other spelling is not an entry:
/// two spellings of one key would be two directories for it.
pub(crate) fn decode(name: &str) -> Option<crate::Key> {
    let raw = decode_bytes(name.as_bytes())?;
    let key = crate::Key::new(std::str::from_utf8(&raw).ok()?).ok()?;
    (encode(key.as_str()) == name).then_some(key)
}

fn decode_bytes(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'+' => {
                out.push(b'/');
                i += 1;
            }
            b'@' if name.get(i + 1) == Some(&b'@') => {
                let hex = std::str::from_utf8(name.get(i + 2..i + 4)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            b'@' => {
                let letter = *name.get(i + 1)?;
                if !letter.is_ascii_lowercase() {
                    return None;
                }
                out.push(letter.to_ascii_uppercase());
                i += 2;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// How formats 1 and 2 spelled a key: `/` as `%2F`, everything else as is.
#[cfg(test)]
pub(crate) fn encode_legacy(key: &str) -> String {
    key.replace('/', "%2F")
}

/// The key a format-1 or format-2 name stood for, by that format's rules
/// (which refused `%` in keys, so `%2F` was unambiguous).
pub(crate) fn decode_legacy(name: &str) -> Option<crate::Key> {
    let key = name.replace("%2F", "/");
    if key.contains('%') {
        return None;
    }
    crate::Key::new(&key).ok()
}

/// Whether `name`, at the root of a cache, belongs to the filesystem or the
/// operating system rather than to safecache or its user: `lost+found` of a
/// fresh ext4 or xfs volume, snapshot directories (`.snapshot`, `.zfs`,
/// `.snapshots`), NFS's silly-renamed files, FUSE's hidden files, macOS's
/// and Windows' volume files. Such names never make a directory "not a
/// cache", and are never adopted, listed, evicted or deleted. None of them
/// can be an entry's name: each starts with `.`, has an uppercase letter, a
/// space or a `$`, or is reserved.
pub(crate) fn is_filesystem_owned(name: &str) -> bool {
    const EXACT: [&str; 14] = [
        "lost+found",
        ".snapshot",
        ".snapshots",
        ".zfs",
        ".Trash",
        ".Trashes",
        ".DS_Store",
        ".Spotlight-V100",
        ".fseventsd",
        ".TemporaryItems",
        ".DocumentRevisions-V100",
        ".apdisk",
        "$RECYCLE.BIN",
        "System Volume Information",
    ];
    const PREFIXES: [&str; 4] = [".nfs", ".fuse_hidden", "._", ".Trash-"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    #[test]
    fn safe_keys_keep_their_name() {
        for key in ["serde", "numpy-2.1.0-cp311-linux_x86_64.whl", "a.b", "v1_2", "x-", "0"] {
            assert_eq!(encode(key), key);
            assert_eq!(decode(key), Some(Key::new(key).unwrap()));
        }
    }

    #[test]
    fn other_keys_are_spelled_readably() {
        assert_eq!(encode("git/serde-1.0.219"), "git+serde-1.0.219");
        assert_eq!(encode("Lib"), "@lib");
        assert_eq!(encode("NumPy/2"), "@num@py+2");
        assert_eq!(encode("a b"), "a@@20b");
        assert_eq!(encode("50%"), "50@@25");
        assert_eq!(encode("é"), "@@c3@@a9");
        assert_eq!(encode(".git"), "@@2egit");
        assert_eq!(encode("-rf"), "@@2drf");
        assert_eq!(encode("foo."), "foo@@2e");
        assert_eq!(encode("a+b"), "a@@2bb");
    }

    #[test]
    fn reserved_names_are_mapped_apart() {
        assert_eq!(encode("lost/found"), "@@6cost+found");
        assert_eq!(encode("con"), "@@63on");
        assert_eq!(encode("nul.txt"), "@@6eul.txt");
        assert_eq!(encode("com1"), "@@63om1");
        assert_eq!(encode("console"), "console", "only the device names themselves");
        for key in ["lost/found", "con", "nul.txt", "com1", "lpt9.log"] {
            let name = encode(key);
            assert!(!is_reserved(&name) && !is_filesystem_owned(&name), "{key} -> {name}");
            assert_eq!(decode(&name).unwrap().as_str(), key);
        }
        assert_eq!(decode("lost+found"), None, "the filesystem's, not the key lost/found");
    }

    #[test]
    fn only_the_canonical_spelling_decodes() {
        assert_eq!(decode("@@61"), None, "`a` written escaped");
        assert_eq!(decode("Lib"), None, "uppercase is never written");
        assert_eq!(decode("a%2Fb"), None);
        assert_eq!(decode("@@zz"), None);
        assert_eq!(decode("@"), None);
        assert_eq!(decode("@@2"), None);
        assert_eq!(decode(".safecache"), None);
        assert_eq!(decode("CACHEDIR.TAG"), None);
        assert_eq!(decode(""), None);
    }

    #[test]
    fn legacy_names_decode_by_their_own_rules() {
        assert_eq!(decode_legacy("git%2Fserde").unwrap().as_str(), "git/serde");
        assert_eq!(decode_legacy("Lib").unwrap().as_str(), "Lib");
        assert_eq!(decode_legacy("a%20b"), None);
        assert_eq!(encode_legacy("git/serde"), "git%2Fserde");
    }

    fn fold(name: &str) -> String {
        // What a case-insensitive, normalizing filesystem compares.
        name.to_lowercase()
    }

    proptest::proptest! {
        /// Distinct keys get distinct names, even once a filesystem folds
        /// their case; every name is safe and decodes to its key.
        #[test]
        fn names_are_injective_and_safe(a in "\\PC{1,24}|[a-zA-Z/ .+@-]{1,12}", b in "\\PC{1,24}|[a-zA-Z/ .+@-]{1,12}") {
            let (Ok(ka), Ok(kb)) = (Key::new(&a), Key::new(&b)) else { return Ok(()) };
            let (na, nb) = (encode(ka.as_str()), encode(kb.as_str()));
            for n in [&na, &nb] {
                proptest::prop_assert!(n.bytes().all(|c| is_plain(c) || c == b'+' || c == b'@'), "{n}");
                proptest::prop_assert!(!n.starts_with('.') && !n.starts_with('-') && !n.ends_with('.'));
                proptest::prop_assert!(!is_reserved(n) && !is_filesystem_owned(n));
            }
            proptest::prop_assert_eq!(decode(&na), Some(ka.clone()));
            if ka != kb {
                proptest::prop_assert_ne!(fold(&na), fold(&nb));
            }
        }

        /// The decoder never panics and never accepts two spellings.
        #[test]
        fn decoding_is_total(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let name = String::from_utf8_lossy(&raw);
            if let Some(key) = decode(&name) {
                proptest::prop_assert_eq!(encode(key.as_str()), name.into_owned());
            }
        }
    }
}
