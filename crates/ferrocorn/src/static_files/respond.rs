//! The response to a static file request: status, header fields and which bytes of which
//! representation go out.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use super::cache::{Entry, Variant};
use super::conditional::{self, Precondition, Range};
use super::negotiate::{self, Coding};
use crate::http1::response::ResponseHead;

/// What the connection sends for a static request.
#[derive(Debug)]
pub(crate) struct Answer {
    pub head: ResponseHead,
    pub body: Body,
}

/// The body of an [`Answer`] (not sent for HEAD; the head still says its length).
#[derive(Debug)]
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of `file` from `offset`, sent with `sendfile(2)` on cleartext.
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

/// What does not change from one request for a file to the next: its type, caching policy
/// and the 200 head of each representation. Made at the first request after (re)opening.
#[derive(Debug)]
pub(crate) struct Prepared {
    content_type: String,
    cache_control: String,
    vary: bool,
    /// The 200 head per coding ([`Coding::index`]), and the file's own last.
    full: [Option<ResponseHead>; 4],
}

const PLAIN: usize = 3;

impl Prepared {
    pub(crate) fn new(entry: &Entry<Self>, name: &str, immutable: bool, max_age: u64) -> Self {
        let cache_control = if immutable {
            "max-age=315360000, public, immutable".to_owned()
        } else if max_age == 0 {
            "no-cache".to_owned()
        } else {
            format!("max-age={max_age}, public")
        };
        let mut p = Self {
            content_type: content_type(name),
            cache_control,
            vary: entry.has_siblings(),
            full: [None, None, None, None],
        };
        for c in Coding::ALL {
            if let Some(v) = &entry.encoded[c.index()] {
                p.full[c.index()] = Some(p.head(200, v, Some(c), v.len, None));
            }
        }
        p.full[PLAIN] = Some(p.head(200, &entry.plain, None, entry.plain.len, None));
        p
    }

    /// A 200, 206 or 304 head for representation `v`.
    fn head(
        &self,
        status: u16,
        v: &Variant,
        coding: Option<Coding>,
        length: u64,
        content_range: Option<(u64, u64)>,
    ) -> ResponseHead {
        let mut h = status_head(status);
        let mut add = |name: &str, value: &[u8]| {
            // Values made here hold no control characters; a failure would only drop a field.
            let _ = h.add(name, value);
        };
        if status != 304 {
            add("Content-Type", self.content_type.as_bytes());
            add("Content-Length", length.to_string().as_bytes());
            add("Accept-Ranges", b"bytes");
        }
        if let Some((start, end)) = content_range {
            add(
                "Content-Range",
                format!("bytes {start}-{end}/{}", v.len).as_bytes(),
            );
        }
        if let Some(c) = coding {
            if status != 304 {
                add("Content-Encoding", c.token().as_bytes());
            }
        }
        add("ETag", v.etag.as_bytes());
        add("Last-Modified", v.last_modified.as_bytes());
        add("Cache-Control", self.cache_control.as_bytes());
        if self.vary {
            add("Vary", b"Accept-Encoding");
        }
        h
    }
}

/// The request fields a static answer depends on.
#[derive(Debug, Default)]
pub(crate) struct Asked<'a> {
    pub is_get: bool,
    pub accept_encoding: Vec<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// Answers a GET or HEAD for a found file.
pub(crate) fn file(entry: &Entry<Prepared>, prepared: &Prepared, asked: &Asked<'_>) -> Answer {
    let available = [0, 1, 2].map(|i| entry.encoded[i].is_some());
    let coding = negotiate::choose(&asked.accept_encoding, available);
    let (v, slot) = match coding.and_then(|c| Some((entry.encoded[c.index()].as_ref()?, c))) {
        Some((v, c)) => (v, c.index()),
        None => (&entry.plain, PLAIN),
    };
    let coding = coding.filter(|_| slot != PLAIN);
    let pre = conditional::evaluate(
        asked.if_none_match,
        asked.if_modified_since,
        &v.etag,
        v.modified,
    );
    if pre == Precondition::NotModified {
        return Answer {
            head: prepared.head(304, v, coding, 0, None),
            body: Body::Empty,
        };
    }
    // RFC 9110 §14.2: Range is for GET only; If-Range may turn it off.
    let range_holds = match asked.if_range {
        Some(ir) => conditional::if_range_holds(ir, &v.etag, v.modified),
        None => true,
    };
    let range = match asked.range {
        Some(r) if asked.is_get && range_holds => conditional::range(r, v.len),
        _ => Range::Full,
    };
    match range {
        Range::Full => {
            let head = match &prepared.full[slot] {
                Some(h) => h.clone(),
                None => prepared.head(200, v, coding, v.len, None),
            };
            Answer {
                head,
                body: whole(v),
            }
        }
        Range::Part { start, end } => {
            let len = end - start + 1;
            let body = match &v.bytes {
                Some(b) => Body::Bytes(b.slice(start as usize..=end as usize)),
                None => Body::File {
                    file: Arc::clone(&v.file),
                    offset: start,
                    len,
                },
            };
            Answer {
                head: prepared.head(206, v, coding, len, Some((start, end))),
                body,
            }
        }
        Range::Unsatisfiable => {
            let mut head = status_head(416);
            let _ = head.add("Content-Range", format!("bytes */{}", v.len).as_bytes());
            let _ = head.add("Content-Length", b"0");
            Answer {
                head,
                body: Body::Empty,
            }
        }
    }
}

fn whole(v: &Variant) -> Body {
    match &v.bytes {
        Some(b) => Body::Bytes(b.clone()),
        None if v.len == 0 => Body::Empty,
        None => Body::File {
            file: Arc::clone(&v.file),
            offset: 0,
            len: v.len,
        },
    }
}

/// A short plain-text answer from the server (404, 405).
pub(crate) fn plain(status: u16, message: &str, extra: &[(&str, &[u8])]) -> Answer {
    let body = format!("{status} {}: {message}\n", reason(status));
    let mut head = status_head(status);
    let _ = head.add("Content-Type", b"text/plain; charset=utf-8");
    let _ = head.add("Content-Length", body.len().to_string().as_bytes());
    for (name, value) in extra {
        let _ = head.add(name, value);
    }
    Answer {
        head,
        body: Body::Bytes(Bytes::from(body)),
    }
}

/// A 302 to `location` (a path as the client sent it, so already visible ASCII).
pub(crate) fn redirect(location: &str) -> Answer {
    let mut head = status_head(302);
    let _ = head.add("Location", location.as_bytes());
    let _ = head.add("Content-Length", b"0");
    Answer {
        head,
        body: Body::Empty,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Error",
    }
}

fn status_head(status: u16) -> ResponseHead {
    let line = format!("{status} {}", reason(status));
    ResponseHead::start(&line).unwrap_or_else(|_| ResponseHead::plain(500, "Internal Server Error"))
}

/// The media type for a file name, from mime_guess's table, with `charset=utf-8` for text
/// (and the text-like types WhiteNoise gives it to: JavaScript, JSON, XML, SVG).
fn content_type(name: &str) -> String {
    let Some(mime) = mime_guess::from_path(name).first_raw() else {
        return "application/octet-stream".to_owned();
    };
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/ecmascript"
                | "application/x-javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/ld+json"
                | "application/xml"
                | "application/xhtml+xml"
                | "image/svg+xml"
        );
    if texty {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_charsets() {
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert!(content_type("a.js").ends_with("javascript; charset=utf-8"));
        assert_eq!(content_type("a.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("a.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("a.woff2"), "font/woff2");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
