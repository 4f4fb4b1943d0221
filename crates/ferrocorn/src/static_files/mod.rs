//! Static files answered by the core itself, on the I/O thread, before the app's route
//! (`--static-map URL_PREFIX=DIRECTORY`): no Python in the path.
//!
//! [`mapping`] turns a request path into a file's place and refuses every way out of the
//! directory; [`cache`] keeps files open with their metadata; [`negotiate`] picks a
//! precompressed sibling; [`conditional`] answers validators and ranges; [`respond`] makes the
//! answer, which `http::conn` writes through the connection's own writer and `sendfile(2)`.

pub(crate) mod cache;
pub(crate) mod conditional;
pub(crate) mod mapping;
pub(crate) mod negotiate;
pub(crate) mod respond;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::statics::StaticSettings;
use crate::http1::request::RequestHead;
use cache::{Cache, Entry, Found};
use mapping::{Mapped, Target};
pub(crate) use respond::{Answer, Body};
use respond::{Asked, Prepared};

/// Why the static-file settings cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("--static-map {prefix}={}: {source}", dir.display())]
    Dir {
        prefix: String,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("--static-map {prefix}={}: not a directory", dir.display())]
    NotDir { prefix: String, dir: PathBuf },
    #[error("--static-map: the prefix {prefix:?} is mapped twice")]
    Twice { prefix: String },
}

/// The mapped directories of a worker and the policy they are served with.
#[derive(Debug)]
pub struct Statics {
    /// URL prefixes without their trailing `/`, longest first...
    prefixes: Vec<String>,
    /// ...and their directories, canonical.
    roots: Vec<PathBuf>,
    max_age: u64,
    immutable: regex_lite::Regex,
    index: bool,
    fallthrough: bool,
    allow_dotfiles: bool,
    cache: Cache<Prepared>,
}

/// Where a static request leads.
enum Located {
    File(Arc<Entry<Prepared>>, String),
    Redirect(String),
    Miss,
}

const INDEX: &str = "index.html";

impl Statics {
    /// Checks the mapped directories (each must exist); `None` when none is mapped.
    pub fn new(settings: &StaticSettings) -> Result<Option<Arc<Self>>, StaticError> {
        if settings.static_map.is_empty() {
            return Ok(None);
        }
        let mut maps = settings.static_map.clone();
        maps.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let mut prefixes = Vec::new();
        let mut roots = Vec::new();
        for m in maps {
            let shown = if m.prefix.is_empty() { "/" } else { &m.prefix };
            if prefixes.contains(&m.prefix) {
                return Err(StaticError::Twice {
                    prefix: shown.to_owned(),
                });
            }
            let root = std::fs::canonicalize(&m.dir).map_err(|source| StaticError::Dir {
                prefix: shown.to_owned(),
                dir: m.dir.clone(),
                source,
            })?;
            if !root.is_dir() {
                return Err(StaticError::NotDir {
                    prefix: shown.to_owned(),
                    dir: m.dir.clone(),
                });
            }
            prefixes.push(m.prefix);
            roots.push(root);
        }
        Ok(Some(Arc::new(Self {
            prefixes,
            roots,
            max_age: settings.static_max_age,
            immutable: settings.static_immutable_pattern.0.clone(),
            index: settings.static_index,
            fallthrough: settings.static_fallthrough,
            allow_dotfiles: settings.static_allow_dotfiles,
            cache: Cache::new(settings.static_allow_symlinks),
        })))
    }

    /// The answer to `head` when its path lies under a mapped prefix; `None` sends the request
    /// to the app (another path, or a miss with `--static-fallthrough`).
    pub(crate) fn answer(&self, head: &RequestHead) -> Option<Answer> {
        let path = head.path();
        let target = match mapping::map(&self.prefixes, path, self.allow_dotfiles)? {
            Mapped::Target(t) => t,
            Mapped::Refused(why) => {
                // Never handed to the app either: the path is an attempt, not a miss.
                log::debug!("static path {path:?} refused: {why}");
                return Some(not_found());
            }
        };
        let method = &*head.method;
        let readable = method == "GET" || method == "HEAD";
        let located = self.locate(&target, path, head.query());
        if !readable && !matches!(located, Located::Miss) {
            return Some(not_allowed());
        }
        let (entry, name) = match located {
            Located::File(entry, name) => (entry, name),
            Located::Redirect(location) => return Some(respond::redirect(&location)),
            Located::Miss if self.fallthrough => return None,
            Located::Miss => return Some(not_found()),
        };
        let prepared = entry.prepared.get_or_init(|| {
            Prepared::new(&entry, &name, self.immutable.is_match(&name), self.max_age)
        });
        let mut asked = Asked {
            is_get: method == "GET",
            ..Asked::default()
        };
        for h in &head.headers {
            let n = &*h.name;
            if n.eq_ignore_ascii_case("accept-encoding") {
                asked.accept_encoding.push(&h.value);
            } else if n.eq_ignore_ascii_case("if-none-match") {
                asked.if_none_match = Some(&h.value);
            } else if n.eq_ignore_ascii_case("if-modified-since") {
                asked.if_modified_since = Some(&h.value);
            } else if n.eq_ignore_ascii_case("range") {
                asked.range = Some(&h.value);
            } else if n.eq_ignore_ascii_case("if-range") {
                asked.if_range = Some(&h.value);
            }
        }
        Some(respond::file(&entry, prepared, &asked))
    }

    /// Finds the file for `t`, or the redirect WhiteNoise's index handling makes.
    fn locate(&self, t: &Target, path: &str, query: &str) -> Located {
        let root = &self.roots[t.mount];
        let with_query = |mut loc: String| {
            if !query.is_empty() {
                loc.push('?');
                loc.push_str(query);
            }
            loc
        };
        let index_of = |rel: &str| {
            if rel.is_empty() {
                INDEX.to_owned()
            } else {
                format!("{rel}/{INDEX}")
            }
        };
        if t.rel.is_empty() || t.trailing_slash {
            if !self.index {
                return Located::Miss;
            }
            let rel = index_of(&t.rel);
            return match self.cache.find(t.mount, root, &rel) {
                Found::File(e) if t.trailing_slash => Located::File(e, INDEX.to_owned()),
                Found::File(_) => Located::Redirect(with_query(format!("{path}/"))),
                _ => Located::Miss,
            };
        }
        let name = t.rel.rsplit('/').next().unwrap_or(&t.rel);
        if self.index && name == INDEX {
            return match self.cache.find(t.mount, root, &t.rel) {
                Found::File(_) => {
                    let dir = path.strip_suffix(INDEX).unwrap_or(path);
                    Located::Redirect(with_query(dir.to_owned()))
                }
                _ => Located::Miss,
            };
        }
        match self.cache.find(t.mount, root, &t.rel) {
            Found::File(e) => Located::File(e, name.to_owned()),
            Found::Dir if self.index => match self.cache.find(t.mount, root, &index_of(&t.rel)) {
                Found::File(_) => Located::Redirect(with_query(format!("{path}/"))),
                _ => Located::Miss,
            },
            Found::Dir | Found::Missing => Located::Miss,
        }
    }
}

fn not_found() -> Answer {
    respond::plain(404, "no such static file", &[])
}

/// RFC 9110 §15.5.6: a 405 lists the methods the resource allows.
fn not_allowed() -> Answer {
    respond::plain(
        405,
        "static files answer GET and HEAD only",
        &[("Allow", b"GET, HEAD")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::http1::request::{parse_head, Limits};
    use clap::Parser;

    /// A fresh directory under the system's temporary one, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let p = std::env::temp_dir().join(format!(
                "ferrocorn-static-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn statics(args: &[&str]) -> Arc<Statics> {
        let argv = ["ferrocorn"].iter().chain(args).chain(&["app:app"]);
        let settings = Settings::try_parse_from(argv).unwrap();
        Statics::new(&settings.statics).unwrap().unwrap()
    }

    fn ask(s: &Statics, request: &str) -> Option<(u16, String, Vec<u8>)> {
        let (head, _) = parse_head(request.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let a = s.answer(&head)?;
        let fields = String::from_utf8_lossy(a.head.headers.as_bytes()).into_owned();
        let body = match a.body {
            Body::Bytes(b) => b.to_vec(),
            Body::Empty => Vec::new(),
            Body::File { .. } => b"<file>".to_vec(),
        };
        Some((a.head.status, fields, body))
    }

    #[test]
    fn answers_from_a_directory() {
        let dir = Dir::new("answers");
        std::fs::write(dir.0.join("a.css"), b"body{}").unwrap();
        std::fs::write(dir.0.join("a.css.gz"), b"GZ").unwrap();
        std::fs::create_dir(dir.0.join("d")).unwrap();
        std::fs::write(dir.0.join("d/index.html"), b"<p>").unwrap();
        let map = format!("/s={}", dir.0.display());
        let s = statics(&["--static-map", &map, "--static-index"]);

        let (status, fields, body) = ask(&s, "GET /s/a.css HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"body{}"[..]));
        assert!(fields.contains("Content-Type: text/css; charset=utf-8\r\n"));
        assert!(fields.contains("Vary: Accept-Encoding\r\n"));
        let etag = fields
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_owned();

        let gz = "GET /s/a.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n";
        let (_, fields, body) = ask(&s, gz).unwrap();
        assert_eq!(body, b"GZ");
        assert!(fields.contains("Content-Encoding: gzip\r\n"));

        let inm = format!("GET /s/a.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
        assert_eq!(ask(&s, &inm).unwrap().0, 304);
        let range = "GET /s/a.css HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n";
        let (status, fields, body) = ask(&s, range).unwrap();
        assert_eq!((status, body.as_slice()), (206, &b"od"[..]));
        assert!(fields.contains("Content-Range: bytes 1-2/6\r\n"));

        let post = "POST /s/a.css HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(ask(&s, post).unwrap().0, 405);
        assert_eq!(
            ask(&s, "GET /s/d/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().2,
            b"<p>"
        );
        let (status, fields, _) = ask(&s, "GET /s/d HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(status, 302);
        assert!(fields.contains("Location: /s/d/\r\n"));
        assert_eq!(
            ask(&s, "GET /s/../x HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap()
                .0,
            404
        );
        assert_eq!(
            ask(&s, "GET /s/no HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().0,
            404
        );
        assert!(ask(&s, "GET /app HTTP/1.1\r\nHost: x\r\n\r\n").is_none());

        let s = statics(&["--static-map", &map, "--static-fallthrough"]);
        assert!(ask(&s, "GET /s/no HTTP/1.1\r\nHost: x\r\n\r\n").is_none());
    }

    #[test]
    fn a_missing_directory_is_named() {
        let settings =
            Settings::try_parse_from(["ferrocorn", "--static-map", "/s=/no/such/dir", "a:b"])
                .unwrap();
        let err = Statics::new(&settings.statics).unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
    }
}
