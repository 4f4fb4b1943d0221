//! Choosing a precompressed sibling (`app.js.br`, `.zst`, `.gz`) by the client's
//! `Accept-Encoding` and its q-values (RFC 9110 §12.5.3).

use crate::http1::request::trim_ows;

/// The encodings a file may have precompressed siblings in, in the server's order of
/// preference when the client likes several equally (smallest files first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub(crate) const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The sibling's file-name suffix.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Br => ".br",
            Self::Zstd => ".zst",
            Self::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Picks the coding to send among those `available`, or `None` for the file itself.
///
/// Each coding's weight is its own q-value, else that of `*`, else 0 (not acceptable). The
/// highest weight wins, the server's order among codings on a tie; a coding is sent unless
/// `identity` (or `*`) is given a higher q-value. `x-gzip` counts as
/// `gzip` (RFC 9110 §8.4.1.3). When nothing is acceptable the file itself is sent anyway, as
/// RFC 9110 §12.5.3 allows.
pub(crate) fn choose(accept_encoding: &[&[u8]], available: [bool; 3]) -> Option<Coding> {
    if !available.iter().any(|a| *a) || accept_encoding.is_empty() {
        return None;
    }
    let mut q = [None::<u16>; 3];
    let mut star = None;
    let mut identity = None;
    for value in accept_encoding {
        for item in value.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let name = trim_ows(parts.next().unwrap_or_default());
            if name.is_empty() {
                continue;
            }
            let weight = parts.find_map(qvalue).unwrap_or(1000);
            let slot = match name.to_ascii_lowercase().as_slice() {
                b"br" => &mut q[Coding::Br.index()],
                b"zstd" => &mut q[Coding::Zstd.index()],
                b"gzip" | b"x-gzip" => &mut q[Coding::Gzip.index()],
                b"identity" => &mut identity,
                b"*" => &mut star,
                _ => continue,
            };
            *slot = Some(weight);
        }
    }
    // Identity without a q-value of its own (or of `*`) yields to any acceptable coding, as
    // the file itself is always acceptable but not preferred (RFC 9110 §12.5.3).
    let identity = identity.or(star).unwrap_or(0);
    let best = Coding::ALL
        .iter()
        .filter(|c| available[c.index()])
        .map(|&c| (c, q[c.index()].or(star).unwrap_or(0)))
        .filter(|&(_, w)| w > 0)
        // max_by_key keeps the last of equals: reverse so the server's first choice wins.
        .rev()
        .max_by_key(|&(_, w)| w)?;
    (best.1 >= identity).then_some(best.0)
}

/// A `q=` parameter as thousandths; `None` for other parameters or a malformed value.
fn qvalue(param: &[u8]) -> Option<u16> {
    let param = trim_ows(param);
    let v = param
        .strip_prefix(b"q=")
        .or_else(|| param.strip_prefix(b"Q="))?;
    let text = std::str::from_utf8(v).ok()?;
    let f: f32 = text.parse().ok()?;
    (0.0..=1.0)
        .contains(&f)
        .then(|| (f * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(ae: &str, available: [bool; 3]) -> Option<Coding> {
        choose(&[ae.as_bytes()], available)
    }

    const ALL: [bool; 3] = [true, true, true];

    #[test]
    fn q_values_decide() {
        assert_eq!(pick("gzip, deflate, br", ALL), Some(Coding::Br));
        assert_eq!(pick("gzip, deflate, br, zstd", ALL), Some(Coding::Br));
        assert_eq!(pick("gzip, br;q=0.5", ALL), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.1", ALL), Some(Coding::Gzip));
        assert_eq!(pick("zstd, gzip;q=0.9", ALL), Some(Coding::Zstd));
        assert_eq!(pick("gzip", [true, true, false]), None);
        assert_eq!(pick("*", [false, false, true]), Some(Coding::Gzip));
        assert_eq!(pick("*;q=0.5, identity", ALL), None);
        assert_eq!(pick("identity;q=0.2, gzip;q=0.5", ALL), Some(Coding::Gzip));
        assert_eq!(pick("identity", ALL), None);
        assert_eq!(pick("", ALL), None);
        assert_eq!(pick("x-gzip", ALL), Some(Coding::Gzip));
        assert_eq!(pick("GZIP;Q=1.0", ALL), Some(Coding::Gzip));
        assert_eq!(pick("br;q=2", ALL), Some(Coding::Br), "bad q ignored");
        assert_eq!(pick("br", [false; 3]), None);
    }
}
