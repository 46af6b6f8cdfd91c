//! This defines how the library's values read in text, for its own
//! messages and for front ends: one duration format, and escaping of
//! anything read from disk before it reaches a terminal.
//!
//! Invariant: text that came from the cache directory (holder records, file
//! names, the format file) is printed only through [`escape`], so a
//! malicious record cannot move the cursor, recolor the terminal or forge
//! lines of output.

use std::fmt::Write as _;
use std::time::Duration;

/// A duration as people read it: `250ms`, `2.5s`, `5m 3s`, `2h 3m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        if ms.is_multiple_of(1000) { format!("{secs}s") } else { format!("{:.1}s", d.as_secs_f64()) }
    } else if secs < 3600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m {s}s", secs / 60),
        }
    } else {
        match (secs % 3600) / 60 {
            0 => format!("{}h", secs / 3600),
            m => format!("{}h {m}m", secs / 3600),
        }
    }
}

/// `text` with every control character (C0, DEL, C1) and every bidi
/// override written as a `\u{..}` escape, and backslashes doubled, so it
/// prints as one inert line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || bidi {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// `argv` as a shell would need it typed: words with nothing special stay
/// bare, others are single-quoted (`sh -c 'echo hi > f'`).
pub fn shell_words(argv: &[String]) -> String {
    let word = |w: &String| {
        let plain = !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
        if plain { w.clone() } else { format!("'{}'", w.replace('\'', "'\\''")) }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// A command line from disk as one short inert phrase: escaped, and cut to
/// 60 characters (57 and `...`) so a long script cannot swamp a message.
pub fn short_command(command: &str) -> String {
    let escaped = escape(command);
    if escaped.chars().count() <= 60 {
        return escaped;
    }
    escaped.chars().take(57).collect::<String>() + "..."
}

/// `n thing` or `n things`, for counts in messages.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Bytes for people: "0 B", "1.5 KiB", "2.0 MiB".
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(303)), "5m 3s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 3m");
        assert_eq!(duration(Duration::from_millis(2500)), "2.5s");
    }

    #[test]
    fn escapes_make_text_inert() {
        assert_eq!(escape("cargo build"), "cargo build");
        assert_eq!(escape("héllo"), "héllo");
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("line\nforged"), "line\\u{a}forged");
        assert_eq!(escape("\u{202e}txt"), "\\u{202e}txt");
        assert_eq!(escape("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(escape("\u{9b}"), "\\u{9b}");
    }

    #[test]
    fn shell_words_quote_what_a_shell_would_split() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(shell_words(&argv(&["git", "clone", "https://x/y.git"])), "git clone https://x/y.git");
        assert_eq!(shell_words(&argv(&["sh", "-c", "echo hi > f"])), "sh -c 'echo hi > f'");
        assert_eq!(shell_words(&argv(&["it's", ""])), "'it'\\''s' ''");
    }

    #[test]
    fn short_commands_stay_short_and_inert() {
        assert_eq!(short_command("cargo build"), "cargo build");
        let long = short_command(&"x".repeat(100));
        assert_eq!((long.chars().count(), long.ends_with("...")), (60, true));
        assert_eq!(short_command("a\nb"), "a\\u{a}b");
    }

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(0, "entry", "entries"), "0 entries");
    }
}
