//! Keeping secrets out of logs, errors and output: passwords inside URLs are masked.

/// Mask the password of every `scheme://user:password@host` in `text`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '/')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(
            redact("connect postgres://billrun:s3cret@db:5432/billing failed"),
            "connect postgres://billrun:***@db:5432/billing failed"
        );
        assert_eq!(
            redact("smtps://mail.example:465"),
            "smtps://mail.example:465"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
