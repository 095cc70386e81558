//! The `Range` request header (RFC 9110 14.1.2) as segment files take it: one `bytes=` range,
//! against a file of known length. Kept free of the server's dependencies so that a fuzz target
//! includes it as it is (`fuzz/fuzz_targets/http_range.rs`).

#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// Not a single byte range we serve (several ranges, another unit): the whole file.
    Ignore,
    /// `[start, end)`.
    Range(usize, usize),
    Unsatisfiable,
}

/// One `bytes=` range of RFC 9110 14.1.2 against a file of `len` bytes.
pub fn byte_range(v: &str, len: usize) -> RangeAsk {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAsk::Ignore;
    };
    if spec.contains(',') {
        return RangeAsk::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Ignore;
    };
    // ASCII digits only (`u64::from_str` would take a leading `+`).
    let parse = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok().map(|n| n.min(usize::MAX as u64) as usize)
    };
    match (a.trim().is_empty(), parse(a), parse(b)) {
        // Suffix: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => RangeAsk::Range(len - n.min(len), len),
        (true, _, Some(_)) => RangeAsk::Unsatisfiable,
        // `bytes=-` or garbage: not a valid range, so ignored (RFC 9110 14.2).
        (true, _, None) => RangeAsk::Ignore,
        (false, Some(a), _) if a >= len => RangeAsk::Unsatisfiable,
        (false, Some(a), None) if b.trim().is_empty() => RangeAsk::Range(a, len),
        (false, Some(a), Some(b)) if b >= a => RangeAsk::Range(a, b.saturating_add(1).min(len)),
        _ => RangeAsk::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-99", 1000), RangeAsk::Range(0, 100));
        assert_eq!(byte_range("bytes=990-2000", 1000), RangeAsk::Range(990, 1000));
        assert_eq!(byte_range("bytes=-10", 1000), RangeAsk::Range(990, 1000));
        assert_eq!(byte_range("bytes=-5000", 1000), RangeAsk::Range(0, 1000));
        assert_eq!(byte_range("bytes=10-", 1000), RangeAsk::Range(10, 1000));
        assert_eq!(byte_range("bytes=1000-", 1000), RangeAsk::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 1000), RangeAsk::Unsatisfiable);
        assert_eq!(byte_range("bytes=5-1", 1000), RangeAsk::Ignore);
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), RangeAsk::Ignore);
        assert_eq!(byte_range("items=0-1", 1000), RangeAsk::Ignore);
        assert_eq!(byte_range("bytes=-", 1000), RangeAsk::Ignore);
        assert_eq!(byte_range("bytes=+5-9", 1000), RangeAsk::Ignore);
        assert_eq!(byte_range("bytes=0-0", 0), RangeAsk::Unsatisfiable);
    }

    proptest! {
        /// Whatever the header, a range served lies within the file and is not empty.
        #[test]
        fn any_header_gives_a_range_within_the_file(v in ".{0,40}", len in 0usize..5000) {
            if let RangeAsk::Range(a, b) = byte_range(&v, len) {
                prop_assert!(a < b && b <= len, "{v:?} {len}: {a}..{b}");
            }
        }
    }
}
