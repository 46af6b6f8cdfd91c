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

/// A duration as people read it: `250ms`, `2.5s`, `5m 3s`, `2h 3m`, `30d`:
/// the one format of every message. Each part is truncated, never rounded
/// up, so `1.99s` reads `1.9s` (not `2.0s`) and `299.9s` reads `4m 59s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        match (ms % 1000) / 100 {
            0 => format!("{secs}s"),
            tenths => format!("{secs}.{tenths}s"),
        }
    } else if secs < 3600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m {s}s", secs / 60),
        }
    } else if secs < 86_400 {
        match (secs % 3600) / 60 {
            0 => format!("{}h", secs / 3600),
            m => format!("{}h {m}m", secs / 3600),
        }
    } else {
        // Eviction ages run to days and months: `720h` reads badly.
        match (secs % 86_400) / 3600 {
            0 => format!("{}d", secs / 86_400),
            h => format!("{}d {h}h", secs / 86_400),
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

/// Bytes for people, in binary units: `0 B`, `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// What [`parse_size`] accepts, for its error message.
const SIZE_FORMS: &str = "expected a size such as `500M`, `10G`, `1.5GiB` or a number of bytes \
     (K, M, G, T are powers of 1000; KiB, MiB, GiB, TiB powers of 1024)";

/// A size as people write it: a number of bytes (`1048576`), or a number
/// and a unit, with decimal units (`K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`)
/// as ccache and cargo read them, and binary ones (`KiB`, `MiB`, `GiB`,
/// `TiB`, also without the `B`). Case does not matter; a fraction is
/// allowed with a unit (`1.5GiB`). The error says which forms work (the
/// caller names the value).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(SIZE_FORMS.to_owned()),
    };
    let bad = || SIZE_FORMS.to_owned();
    if multiplier == 1 {
        return number.parse::<u64>().map_err(|_| bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// What [`parse_duration`] accepts, for its error message.
const DURATION_FORMS: &str =
    "expected a duration such as `30d`, `12h`, `90m` or `45s` (also `w` for weeks), or `never`";

/// A duration as people write it: a number and a unit, `s`, `m`, `h`, `d`
/// or `w` (`30d`, `1.5h`), or `never` for no limit (`None`). A bare number
/// is refused: `30` could mean seconds or days.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let bad = || DURATION_FORMS.to_owned();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let secs: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * secs).map(Some).map_err(|_| bad())
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
        assert_eq!(duration(Duration::from_millis(1999)), "1.9s");
        assert_eq!(duration(Duration::from_millis(2050)), "2s");
        assert_eq!(duration(Duration::from_millis(299_900)), "4m 59s");
        assert_eq!(duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(duration(Duration::from_secs(86_400 + 7200)), "1d 2h");
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

    #[test]
    fn sizes_read_and_parse() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_size("10gb"), Ok(10_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("4Ki"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "G", "1.5", "-1G", "10X", "1e3", "99999999999T", "1..5G"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("expected a size such as `500M`"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_parse_with_a_unit_or_never() {
        assert_eq!(parse_duration("30d"), Ok(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(parse_duration("12h"), Ok(Some(Duration::from_secs(12 * 3600))));
        assert_eq!(parse_duration("90m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_duration("1.5h"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_duration("2w"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert_eq!(parse_duration("0s"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_duration("Never"), Ok(None));
        for bad in ["", "30", "d", "30x", "-1d", "1e99999d", "never-ish"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("expected a duration such as `30d`"), "{bad}: {err}");
        }
    }
}
