//! From a request path to a file's place under a mapped directory, refusing every way out.
//!
//! The path is matched against the URL prefixes as sent, then the rest is percent-decoded
//! (RFC 3986 §2.1) and checked segment by segment: no `.` or `..`, no encoded `/` or `\`, no
//! NUL or other control character, valid UTF-8 only (which refuses overlong forms such as
//! `%c0%ae`), no Windows device names or stream suffixes, and no dotfiles unless allowed.
//! Symbolic links are checked after opening, in [`super::cache`].

use std::path::PathBuf;

/// Where a request path points under one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Which `--static-map` it falls under.
    pub mount: usize,
    /// The decoded path below the mount's directory, `/`-separated, without leading or
    /// trailing `/` (empty for the mount's root).
    pub rel: String,
    /// The request path ended with `/`.
    pub trailing_slash: bool,
}

/// How a path under a mapped prefix was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mapped {
    Target(Target),
    /// A path that tries to leave its directory, or names what is never served.
    Refused(&'static str),
}

/// Windows device names: a file so named (with any extension) is the device itself there.
const DEVICES: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"];

/// Matches `path` (the request target's path, still percent-encoded) against `prefixes`
/// (without trailing `/`, longest first); `None` when none applies.
pub(crate) fn map(prefixes: &[String], path: &str, allow_dotfiles: bool) -> Option<Mapped> {
    let (mount, rest) = prefixes.iter().enumerate().find_map(|(i, p)| {
        let rest = path.strip_prefix(p.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some((i, rest))
    })?;
    Some(match check(rest, allow_dotfiles) {
        Ok(rel) => Mapped::Target(Target {
            mount,
            rel,
            trailing_slash: rest.ends_with('/'),
        }),
        Err(why) => Mapped::Refused(why),
    })
}

/// Decodes and checks the part of the path below the prefix.
fn check(rest: &str, allow_dotfiles: bool) -> Result<String, &'static str> {
    let mut segments: Vec<String> = Vec::new();
    // Split before decoding: an encoded `/` must not make a new segment, and is refused.
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        let seg = String::from_utf8(bytes).map_err(|_| "not UTF-8 (or an overlong form)")?;
        if seg.contains(['/', '\\']) {
            return Err("an encoded slash or a backslash");
        }
        if seg.chars().any(char::is_control) {
            return Err("a NUL or control character");
        }
        if seg == "." || seg == ".." {
            return Err("a dot segment");
        }
        if seg.starts_with('.') && !allow_dotfiles {
            return Err("a dotfile");
        }
        if is_windows_trick(&seg) {
            return Err("a Windows device name or stream");
        }
        segments.push(seg);
    }
    Ok(segments.join("/"))
}

/// `CON`, `nul.txt`, `COM1`, `lpt9.js`, `file.txt::$DATA`, names ending in a dot or a space:
/// harmless on Linux but each refers to something else on Windows, so never served.
fn is_windows_trick(seg: &str) -> bool {
    if seg.contains(':') || seg.ends_with(['.', ' ']) {
        return true;
    }
    let stem = seg.split('.').next().unwrap_or(seg).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if DEVICES.contains(&upper.as_str()) {
        return true;
    }
    // COM0-9 and LPT0-9, also with the superscript digits Windows accepts.
    let rest = upper
        .strip_prefix("COM")
        .or_else(|| upper.strip_prefix("LPT"));
    matches!(rest, Some(d) if matches!(d, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"))
}

/// `rel` under `root`.
pub(crate) fn join(root: &std::path::Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(seg);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes() -> Vec<String> {
        vec!["/static/img".into(), "/static".into()]
    }

    fn target(path: &str) -> Mapped {
        map(&prefixes(), path, false).expect("under a prefix")
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(map(&prefixes(), "/staticx/a", false), None);
        assert_eq!(map(&prefixes(), "/app", false), None);
        let Mapped::Target(t) = target("/static/img/a.png") else {
            panic!()
        };
        assert_eq!((t.mount, t.rel.as_str()), (0, "a.png"));
        let Mapped::Target(t) = target("/static/css//a%20b.css") else {
            panic!()
        };
        assert_eq!((t.mount, t.rel.as_str()), (1, "css/a b.css"));
        let Mapped::Target(t) = target("/static") else {
            panic!()
        };
        assert_eq!((t.rel.as_str(), t.trailing_slash), ("", false));
        let root = vec![String::new()];
        assert!(matches!(
            map(&root, "/favicon.ico", false),
            Some(Mapped::Target(_))
        ));
    }

    #[test]
    fn every_way_out_is_refused() {
        for bad in [
            "/static/../secret",
            "/static/a/../../secret",
            "/static/%2e%2e/secret",
            "/static/%2E%2E/secret",
            "/static/.%2e/secret",
            "/static/..%2fsecret",
            "/static/..%2Fsecret",
            "/static/a%5c..%5csecret",
            "/static/a\\b",
            "/static/a%00.css",
            "/static/a%0a.css",
            "/static/%c0%ae%c0%ae/secret",
            "/static/%e0%80%ae%e0%80%ae/secret",
            "/static/%ff.css",
            "/static/.env",
            "/static/.git/config",
            "/static/CON",
            "/static/nul.txt",
            "/static/Com1.js",
            "/static/lpt9",
            "/static/aux .css",
            "/static/a.css::$DATA",
            "/static/a.css.",
            "/static/.",
        ] {
            assert!(matches!(target(bad), Mapped::Refused(_)), "{bad}");
        }
        assert!(matches!(
            map(&prefixes(), "/static/.well-known/x", true),
            Some(Mapped::Target(_))
        ));
        for fine in [
            "/static/console.css",
            "/static/con-tact.js",
            "/static/com10.js",
        ] {
            assert!(matches!(target(fine), Mapped::Target(_)), "{fine}");
        }
    }
}
