//! Email addresses as account names: one canonical form per address, and no look-alikes.
//!
//! An address is trimmed, put in Unicode compatibility form (NFKC: fullwidth `ａｄｍｉｎ`
//! becomes `admin`) and lower-cased. What would still let two accounts look the same to a
//! person is refused rather than silently mapped:
//! - invisible and formatting characters (zero-width space and joiners, bidi controls, soft
//!   hyphen...) and anything else UTS #39 does not allow in identifiers, except the ASCII
//!   punctuation addresses use;
//! - a local part or domain label that mixes scripts (`аdmin` with a Cyrillic `а`).

use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, MixedScript};

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_LEN: usize = 254;

/// Why an address was refused (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    /// Not `local@domain`, too long, or with white space.
    #[error("email must be an address like name@example.com")]
    Malformed,
    /// Holds an invisible, formatting or otherwise disallowed character.
    #[error("email contains characters that are not allowed in an address")]
    DisallowedCharacter,
    /// A local part or domain label mixes scripts (say Latin and Cyrillic).
    #[error("email mixes letters of different scripts")]
    MixedScripts,
}

/// The canonical form of `raw`, or why it cannot name an account.
pub fn normalize_email(raw: &str) -> Result<String, InvalidEmail> {
    let email: String = raw.trim().nfkc().collect::<String>().to_lowercase();
    let (local, domain) = email.split_once('@').ok_or(InvalidEmail::Malformed)?;
    if email.len() > MAX_LEN
        || local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(InvalidEmail::Malformed);
    }
    if !email.chars().all(allowed) {
        return Err(InvalidEmail::DisallowedCharacter);
    }
    let single_script = std::iter::once(local)
        .chain(domain.split('.'))
        .all(MixedScript::is_single_script);
    if !single_script {
        return Err(InvalidEmail::MixedScripts);
    }
    Ok(email)
}

/// ASCII letters, digits and the punctuation of addresses, or a character UTS #39 allows
/// in identifiers (letters of any one script, for internationalised addresses).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "@.!#$%&'*+/=?^_`{|}~-".contains(c) || c.identifier_allowed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Ada.Lovelace+x@Example.COM "),
            Ok("ada.lovelace+x@example.com".to_owned())
        );
    }

    #[test]
    fn fullwidth_forms_map_to_the_same_account() {
        assert_eq!(
            normalize_email("ａｄｍｉｎ@ｅｘａｍｐｌｅ.ｃｏｍ"),
            Ok("admin@example.com".to_owned())
        );
    }

    #[test]
    fn invisible_characters_are_refused() {
        for raw in [
            "admin\u{200b}@example.com",
            "ad\u{200d}min@example.com",
            "admin@exa\u{00ad}mple.com",
            "\u{202e}nimda@example.com",
            "admin\u{feff}@example.com",
        ] {
            assert_eq!(
                normalize_email(raw),
                Err(InvalidEmail::DisallowedCharacter),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn mixed_script_look_alikes_are_refused() {
        // Cyrillic а (U+0430) in a Latin name, and in a Latin domain.
        assert_eq!(
            normalize_email("\u{430}dmin@example.com"),
            Err(InvalidEmail::MixedScripts)
        );
        assert_eq!(
            normalize_email("admin@ex\u{430}mple.com"),
            Err(InvalidEmail::MixedScripts)
        );
        // One script throughout is an internationalised address, not a look-alike.
        assert_eq!(
            normalize_email("Владимир@пример.рф"),
            Ok("владимир@пример.рф".to_owned())
        );
    }

    #[test]
    fn what_cannot_be_an_address_is_malformed() {
        for raw in [
            "",
            "no-at-sign",
            "@example.com",
            "ada@",
            "a@b@c",
            "ada lovelace@example.com",
            "ada\u{7}@example.com",
        ] {
            assert_eq!(
                normalize_email(raw),
                Err(InvalidEmail::Malformed),
                "{raw:?}"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(normalize_email(&long), Err(InvalidEmail::Malformed));
    }
}
