//! Who a request is about: the app (one ledger and catalog each) and the user in it.

/// Longest app key, in bytes (app keys are ASCII).
pub const MAX_APP_KEY_LEN: usize = 64;

/// Longest user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// What [`is_app_key`] accepts, for error messages.
pub const APP_KEY_RULE: &str = "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', '.'";

/// What [`is_user_id`] accepts, for error messages.
pub const USER_ID_RULE: &str = "must be 1-128 characters without control characters";

/// App keys are short identifiers: 1–64 of `A-Z a-z 0-9 _ - .`.
pub fn is_app_key(app: &str) -> bool {
    !app.is_empty()
        && app.len() <= MAX_APP_KEY_LEN
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// User ids are the host app's own: any 1–128 characters except control characters.
pub fn is_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.chars().count() <= MAX_USER_ID_CHARS
        && !user.chars().any(char::is_control)
}

/// Whether free text holds a control character (`char::is_control`: C0, DEL, C1), other than
/// the line breaks and tabs of multi-line text when `multiline`. Names, ids and one-line
/// descriptions refuse every control character; long descriptions keep their lines.
pub fn has_control_chars(text: &str, multiline: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_keys_are_short_identifiers() {
        for ok in ["default", "acme-prod", "a.b_c", &"a".repeat(64)] {
            assert!(is_app_key(ok), "{ok}");
        }
        for bad in ["", "with space", "ünï", "a/b", &"a".repeat(65)] {
            assert!(!is_app_key(bad), "{bad}");
        }
    }

    #[test]
    fn user_ids_are_anything_printable() {
        for ok in ["alice", "<b>bob</b>", "用户", &"é".repeat(128)] {
            assert!(is_user_id(ok), "{ok}");
        }
        for bad in ["", "a\nb", "nul\0", &"é".repeat(129)] {
            assert!(!is_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_in_text() {
        assert!(!has_control_chars("Pro plan – 500 msgs", false));
        assert!(has_control_chars("a\u{0}b", false));
        assert!(has_control_chars("a\u{7f}", true));
        assert!(has_control_chars("a\u{85}", true));
        assert!(has_control_chars("line\nbreak", false));
        assert!(!has_control_chars("line\nbreak\twith tab\r\n", true));
    }
}
