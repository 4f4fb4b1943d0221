//! Settings for static files served by the core (`--static-map` and its companions).

use std::path::PathBuf;

use clap::Args;

/// The default `--static-immutable-pattern`: file names carrying a content hash.
///
/// - Django's `ManifestStaticFilesStorage` and webpack's `[contenthash]`: `.` or `-` then 8 or
///   more lowercase hex digits before the extensions (`app.0123456789ab.css`,
///   `main.3f2a1b9c.chunk.js`).
/// - Vite and Rollup: `-` then 8 base64url characters, at least one of them a digit or a
///   capital, so a plain word such as `jquery-validate.js` is not taken for a hash
///   (`index-DeAdBeEf.js`).
pub const DEFAULT_IMMUTABLE: &str = concat!(
    r"[.-][0-9a-f]{8,}(?:\.[A-Za-z0-9]+)+$",
    r"|-(?:[A-Z0-9][A-Za-z0-9_-]{7}|[A-Za-z0-9_-][A-Z0-9][A-Za-z0-9_-]{6}",
    r"|[A-Za-z0-9_-]{2}[A-Z0-9][A-Za-z0-9_-]{5}|[A-Za-z0-9_-]{3}[A-Z0-9][A-Za-z0-9_-]{4}",
    r"|[A-Za-z0-9_-]{4}[A-Z0-9][A-Za-z0-9_-]{3}|[A-Za-z0-9_-]{5}[A-Z0-9][A-Za-z0-9_-]{2}",
    r"|[A-Za-z0-9_-]{6}[A-Z0-9][A-Za-z0-9_-]|[A-Za-z0-9_-]{7}[A-Z0-9])\.[A-Za-z0-9]+$",
);

/// Static-file flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct StaticSettings {
    /// Serve the files under DIRECTORY at URL_PREFIX from the server itself, without calling
    /// the app (e.g. /static=./staticfiles). Repeatable. GET and HEAD, with ETag,
    /// Last-Modified, conditional requests, single byte ranges and precompressed .br / .zst /
    /// .gz siblings. A directory that does not exist stops the start.
    #[arg(long, value_name = "URL_PREFIX=DIRECTORY", value_parser = parse_static_map)]
    pub static_map: Vec<StaticMap>,

    /// Cache-Control max-age, in seconds, for static files whose name carries no content hash
    /// (0: no-cache).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub static_max_age: u64,

    /// Static file names matching this regular expression never change (they carry a content
    /// hash) and are cached for ten years: Cache-Control: max-age=315360000, public,
    /// immutable. The default matches Django's ManifestStaticFilesStorage names
    /// (app.0123456789ab.css) and webpack / Vite hashes (app.3f2a1b9c.js, index-DeAdBeEf.js).
    #[arg(long, value_name = "REGEX", default_value = DEFAULT_IMMUTABLE, value_parser = parse_pattern)]
    pub static_immutable_pattern: Pattern,

    /// For a directory under a static prefix, serve its index.html: /dir/ answers with it,
    /// while /dir and /dir/index.html redirect (302) to /dir/.
    #[arg(long)]
    pub static_index: bool,

    /// A request under a static prefix that matches no file goes to the app instead of being
    /// answered 404 by the server.
    #[arg(long)]
    pub static_fallthrough: bool,

    /// Serve files reached through symbolic links that point outside the mapped directory
    /// (e.g. Django's collectstatic --link). Off: such files are answered 404.
    #[arg(long)]
    pub static_allow_symlinks: bool,

    /// Serve files and directories whose name starts with a dot. Off: they are answered 404.
    #[arg(long)]
    pub static_allow_dotfiles: bool,
}

/// One `--static-map URL_PREFIX=DIRECTORY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMap {
    /// The URL prefix without its trailing `/` (`""` for the root).
    pub prefix: String,
    pub dir: PathBuf,
}

fn parse_static_map(s: &str) -> Result<StaticMap, String> {
    let (prefix, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not URL_PREFIX=DIRECTORY"))?;
    if !prefix.starts_with('/') || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{prefix:?} must be a URL path starting with / (visible ASCII only)"
        ));
    }
    if prefix.contains(['?', '#', '%', '\\']) || prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(format!(
            "{prefix:?} must be a plain path (no ?, #, %, \\, . or .. segments)"
        ));
    }
    if dir.is_empty() {
        return Err(format!("{s:?} names no directory"));
    }
    Ok(StaticMap {
        prefix: prefix.trim_end_matches('/').to_owned(),
        dir: PathBuf::from(dir),
    })
}

/// A compiled `--static-immutable-pattern` (with its text, for display).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex_lite::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    regex_lite::Regex::new(s)
        .map(Pattern)
        .map_err(|e| format!("not a regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_bad_ones_say_why() {
        let m = parse_static_map("/static/=./s").unwrap();
        assert_eq!(m.prefix, "/static");
        assert_eq!(m.dir, PathBuf::from("./s"));
        assert_eq!(parse_static_map("/=x").unwrap().prefix, "");
        for bad in ["static=x", "/static", "/a/../b=x", "/s%2e=x", "/s="] {
            assert!(parse_static_map(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_pattern_takes_hashes_not_words() {
        let p = parse_pattern(DEFAULT_IMMUTABLE).unwrap().0;
        for hashed in [
            "app.0123456789ab.css",
            "main.3f2a1b9c.js",
            "main.3f2a1b9c0d.chunk.js",
            "index-DeAdBeEf.js",
            "vendor-a1b2c3d4.js",
            "logo-Bz9_x-Qa.svg",
        ] {
            assert!(p.is_match(hashed), "{hashed}");
        }
        for plain in [
            "app.css",
            "jquery-validate.js",
            "bootstrap.min.css",
            "font-awesome.css",
            "select2-bootstrap.css",
            "jquery-3.7.1.min.js",
        ] {
            assert!(!p.is_match(plain), "{plain}");
        }
    }
}
