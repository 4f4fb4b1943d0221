//! Conditional and range requests against one file's validators (RFC 9110 §13 and §14).

use std::time::SystemTime;

use crate::http1::request::trim_ows;

/// What the request's preconditions make of a GET or HEAD (RFC 9110 §13.2.2's order, for the
/// fields a static file server honours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Send the representation.
    Proceed,
    /// 304 Not Modified.
    NotModified,
}

/// Evaluates `If-None-Match` (weak comparison, §13.1.2) or, only when that is absent,
/// `If-Modified-Since` (§13.1.3) against `etag` and `modified`.
pub(crate) fn evaluate(
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    etag: &str,
    modified: SystemTime,
) -> Precondition {
    if let Some(inm) = if_none_match {
        return if etag_list_matches(inm, etag, false) {
            Precondition::NotModified
        } else {
            Precondition::Proceed
        };
    }
    if let Some(since) = if_modified_since.and_then(parse_date) {
        if truncate(modified) <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// True when `list` (`*` or comma-separated entity tags) holds `etag`; `strong` asks for the
/// strong comparison, where weak tags never match.
fn etag_list_matches(list: &[u8], etag: &str, strong: bool) -> bool {
    let list = trim_ows(list);
    if list == b"*" {
        return true;
    }
    let (our_weak, ours) = split_weak(etag.as_bytes());
    list.split(|&b| b == b',').map(trim_ows).any(|tag| {
        let (weak, opaque) = split_weak(tag);
        if strong && (weak || our_weak) {
            return false;
        }
        opaque == ours
    })
}

fn split_weak(tag: &[u8]) -> (bool, &[u8]) {
    match tag.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// The requested byte range, inclusive, already checked against the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    /// No usable single range: send the whole file (absent, malformed, another unit, or
    /// several ranges, which this server answers with the whole file, as RFC 9110 §14.2
    /// allows).
    Full,
    /// 206 with these bytes.
    Part { start: u64, end: u64 },
    /// 416: the range lies wholly beyond the file.
    Unsatisfiable,
}

/// Reads a `Range` header (RFC 9110 §14.1.2) for a file of `len` bytes.
pub(crate) fn range(header: &[u8], len: u64) -> Range {
    let Ok(text) = std::str::from_utf8(trim_ows(header)) else {
        return Range::Full;
    };
    let Some(spec) = text
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, s)| s.trim())
    else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // A suffix: the last n bytes.
        if !digits(last) {
            return Range::Full;
        }
        let n = last.parse::<u64>().unwrap_or(u64::MAX);
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return Range::Full;
    }
    let Ok(start) = first.parse::<u64>() else {
        return Range::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        last.parse::<u64>().unwrap_or(u64::MAX)
    };
    if end < start {
        return Range::Full; // invalid: ignored (§14.1.1)
    }
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part {
        start,
        end: end.min(len - 1),
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only when the validator is the file's
/// current strong ETag, or exactly its Last-Modified date.
pub(crate) fn if_range_holds(if_range: &[u8], etag: &str, modified: SystemTime) -> bool {
    let v = trim_ows(if_range);
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return etag_list_matches(v, etag, true) && !v.contains(&b',');
    }
    parse_date(v).is_some_and(|d| d == truncate(modified))
}

/// An HTTP-date in any of the three formats of RFC 9110 §5.6.7.
fn parse_date(v: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(trim_ows(v)).ok()?).ok()
}

/// Whole seconds, as an HTTP-date carries them.
pub(crate) fn truncate(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TAG: &str = "\"5f3a-1c\"";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn not_modified_by_etag_then_date() {
        let m = at(1_700_000_000) + Duration::from_millis(300);
        let date = httpdate::fmt_http_date(at(1_700_000_000));
        let older = httpdate::fmt_http_date(at(1_699_999_999));
        let e = |inm: Option<&str>, ims: Option<&str>| {
            evaluate(inm.map(str::as_bytes), ims.map(str::as_bytes), TAG, m)
        };
        assert_eq!(e(Some(TAG), None), Precondition::NotModified);
        assert_eq!(e(Some("W/\"5f3a-1c\""), None), Precondition::NotModified);
        assert_eq!(
            e(Some("\"x\", \"5f3a-1c\""), None),
            Precondition::NotModified
        );
        assert_eq!(e(Some("*"), None), Precondition::NotModified);
        assert_eq!(e(Some("\"x\""), Some(&date)), Precondition::Proceed);
        assert_eq!(e(None, Some(&date)), Precondition::NotModified);
        assert_eq!(e(None, Some(&older)), Precondition::Proceed);
        assert_eq!(e(None, Some("yesterday")), Precondition::Proceed);
        assert_eq!(e(None, None), Precondition::Proceed);
    }

    #[test]
    fn ranges() {
        assert_eq!(range(b"bytes=0-9", 100), Range::Part { start: 0, end: 9 });
        assert_eq!(range(b"bytes=90-", 100), Range::Part { start: 90, end: 99 });
        assert_eq!(
            range(b"bytes=90-1000", 100),
            Range::Part { start: 90, end: 99 }
        );
        assert_eq!(range(b"bytes=-10", 100), Range::Part { start: 90, end: 99 });
        assert_eq!(
            range(b"bytes=-1000", 100),
            Range::Part { start: 0, end: 99 }
        );
        assert_eq!(range(b"bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(range(b"bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(range(b"bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(range(b"bytes=0-1,5-6", 100), Range::Full);
        assert_eq!(range(b"bytes=5-1", 100), Range::Full);
        assert_eq!(range(b"items=0-1", 100), Range::Full);
        assert_eq!(range(b"bytes=a-b", 100), Range::Full);
        assert_eq!(
            range(b"bytes=99999999999999999999999-", 100),
            Range::Unsatisfiable
        );
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let m = at(1_700_000_000);
        assert!(if_range_holds(TAG.as_bytes(), TAG, m));
        assert!(!if_range_holds(b"W/\"5f3a-1c\"", TAG, m));
        assert!(!if_range_holds(b"\"other\"", TAG, m));
        assert!(if_range_holds(
            httpdate::fmt_http_date(m).as_bytes(),
            TAG,
            m
        ));
        assert!(!if_range_holds(
            httpdate::fmt_http_date(at(1)).as_bytes(),
            TAG,
            m
        ));
    }
}
