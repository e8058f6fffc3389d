//! Span names need low cardinality: `GET /users/{id}`, not one name per
//! user. Without the application's route table we template the path:
//! segments that look like identifiers become `{id}`.

/// Path segments longer than this are identifiers whatever they contain.
const LONG_SEGMENT: usize = 48;

fn is_identifier(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg.len() > LONG_SEGMENT {
        return true;
    }
    // All digits; or, for UUIDs and long hex strings (hashes, object ids),
    // hex digits and dashes only, at least 16 hex digits and one decimal
    // digit. One pass, stopping at the first other byte (most segments
    // are words, and stop at once).
    let (mut digits, mut hex) = (0, 0);
    for b in seg.bytes() {
        if b.is_ascii_digit() {
            digits += 1;
            hex += 1;
        } else if b.is_ascii_hexdigit() {
            hex += 1;
        } else if b != b'-' {
            return false;
        }
    }
    digits == seg.len() || (hex >= 16 && digits > 0)
}

/// `/users/42/orders/9f1c...` -> `/users/{id}/orders/{id}`.
#[cfg(test)]
pub fn template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    template_into(path, &mut out);
    out
}

/// [`template`], appended to `out` (the span name, after its method).
pub fn template_into(path: &str, out: &mut String) {
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_identifier(seg) { "{id}" } else { seg });
    }
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn templates_identifiers_only() {
        assert_eq!(template("/"), "/");
        assert_eq!(template("/users/42"), "/users/{id}");
        assert_eq!(
            template("/a/550e8400-e29b-41d4-a716-446655440000/b"),
            "/a/{id}/b"
        );
        assert_eq!(template("/blob/0123456789abcdef0123"), "/blob/{id}");
        assert_eq!(template("/index.html"), "/index.html");
        assert_eq!(template("/api/v1/status"), "/api/v1/status");
        assert_eq!(template("/deadbeefdeadbeef"), "/deadbeefdeadbeef"); // no digit: a word
    }

    /// The rule as first written, several passes.
    fn is_identifier_by_counts(seg: &str) -> bool {
        if seg.is_empty() {
            return false;
        }
        if seg.len() > super::LONG_SEGMENT || seg.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        let hex = seg.bytes().filter(|b| b.is_ascii_hexdigit()).count();
        let dashes = seg.bytes().filter(|&b| b == b'-').count();
        hex + dashes == seg.len() && hex >= 16 && seg.bytes().any(|b| b.is_ascii_digit())
    }

    #[test]
    fn identifiers_as_by_counting() {
        let segs = [
            "",
            "42",
            "-",
            "users",
            "0123456789abcdef",
            "0123456789abcdeg",
            "abcdefabcdefabcd",
            "550e8400-e29b-41d4-a716-446655440000",
            "550E8400-E29B-41D4-A716-446655440000",
            "--------------------1",
            "v1",
            "é0123456789abcdef",
            &"x".repeat(49),
            &"x".repeat(48),
        ];
        for seg in segs {
            let mut variants = vec![seg.to_string()];
            for c in ['0', 'a', 'G', '-', '.', 'é'] {
                variants.push(format!("{seg}{c}"));
                variants.push(format!("{c}{seg}"));
            }
            for v in variants {
                assert_eq!(
                    super::is_identifier(&v),
                    is_identifier_by_counts(&v),
                    "{v:?}"
                );
            }
        }
    }
}
