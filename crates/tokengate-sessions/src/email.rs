//! Email addresses as the store keys them: trimmed and lower-cased.

/// Not something that can be an email address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("email must be an address like name@example.com")]
pub struct InvalidEmail;

/// Trim and lower-case an email address; refuse what cannot be one (no `@`, an empty part,
/// whitespace or control characters, over 254 bytes). Deliverability is not checked.
pub fn normalize_email(raw: &str) -> Result<String, InvalidEmail> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(InvalidEmail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM "),
            Ok("ada@example.com".to_owned())
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a@b@c",
            "a b@c.d",
            "a\u{7}@b.c",
        ] {
            assert_eq!(normalize_email(bad), Err(InvalidEmail), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@b.c", "a".repeat(260))).is_err());
    }
}
