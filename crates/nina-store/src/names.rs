//! Names on disk: built from ids and times only, checked on the way in.

/// Whether `s` is a safe identifier for a file or folder name: 1 to 64 characters from
/// `A-Z a-z 0-9 _ -`.
pub fn is_safe_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` is a relative path of safe components: each 1 to 128 characters from
/// `A-Z a-z 0-9 _ - .`, not starting with a dot (so neither `..` nor hidden files), at most 8 deep.
pub fn is_safe_relative(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 8
        && parts.iter().all(|p| {
            (1..=128).contains(&p.len())
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

/// A Discord id as the layout names folders: 1 to 20 ASCII digits.
pub fn is_numeric_id(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A date folder of the layout: `YYYY-MM-DD` (digits and dashes in place).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn date_of_unix_ms(ms: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{:04}-{m:02}-{d:02}", y.clamp(0, 9999))
}

/// The file of an utterance: `audio/<user_id>/<seq>-<start_ms>.wav` (zero-padded, so names sort),
/// or `audio/<user_id>/<seq>-<start_ms>-<tag>.wav` with a tag (its first 16 characters of
/// `a-z 0-9` are used), which re-segmenting uses so that new files never overwrite the ones the
/// current `session.json` names.
pub fn utterance_file(user_id: u64, seq: u64, start_seconds: f64, tag: Option<&str>) -> String {
    let ms = (start_seconds.max(0.0) * 1000.0).round() as u64;
    let tag: String = tag
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    if tag.is_empty() {
        format!("audio/{user_id}/{seq:06}-{ms:010}.wav")
    } else {
        format!("audio/{user_id}/{seq:06}-{ms:010}-{tag}.wav")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_of_unix_ms(0), "1970-01-01");
        assert_eq!(date_of_unix_ms(1_714_564_800_000), "2024-05-01");
        assert_eq!(date_of_unix_ms(951_782_400_000), "2000-02-29");
        assert_eq!(date_of_unix_ms(-1), "1969-12-31");
        assert!(is_date(&date_of_unix_ms(i64::MAX)));
        assert!(is_date(&date_of_unix_ms(i64::MIN)));
    }

    #[test]
    fn names() {
        assert_eq!(
            utterance_file(7, 3, 1.2345, None),
            "audio/7/000003-0000001235.wav"
        );
        assert_eq!(
            utterance_file(7, 3, 1.2345, Some("../AB12cd")),
            "audio/7/000003-0000001235-12cd.wav"
        );
        assert!(is_safe_relative(&utterance_file(
            u64::MAX,
            u64::MAX,
            1e12,
            Some(&"f".repeat(99))
        )));
        assert!(!is_safe_id("a/b") && !is_safe_id("..") && !is_safe_id(""));
        assert!(is_safe_id("2024-05-01_abc"));
    }

    proptest::proptest! {
        #[test]
        fn safe_relative_paths_never_climb(s in ".{0,40}") {
            if is_safe_relative(&s) {
                let p = std::path::Path::new(&s);
                proptest::prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
    }
}
