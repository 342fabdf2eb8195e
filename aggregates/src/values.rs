//! Values parsed once at the edge and trusted inside ("parse, don't validate").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("is not a valid email address")]
    Email,
    #[error("must be between {min} and {max} characters")]
    Length { min: usize, max: usize },
    #[error("must be a single emoji")]
    Emoji,
}

/// One emoji: a single grapheme (a flag, a keycap, a sequence joined with ZWJ or skin tones all
/// count as one) that is pictographic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Emoji(String);

impl Emoji {
    /// Long enough for the longest ZWJ sequences.
    const MAX_BYTES: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        use unicode_segmentation::UnicodeSegmentation;
        let mut graphemes = raw.graphemes(true);
        let (Some(one), None) = (graphemes.next(), graphemes.next()) else { return Err(ValueError::Emoji) };
        let keycap = one.ends_with('\u{20E3}');
        if one.len() > Self::MAX_BYTES || !(keycap || one.chars().any(pictographic)) {
            return Err(ValueError::Emoji);
        }
        Ok(Self(one.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` is drawn as a picture (the blocks of Unicode's Extended_Pictographic and the
/// regional indicators that make flags).
fn pictographic(c: char) -> bool {
    matches!(c as u32,
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0x2194..=0x21AA | 0x231A..=0x23FF
        | 0x24C2 | 0x25AA..=0x25FE | 0x2600..=0x27BF | 0x2934 | 0x2935 | 0x2B05..=0x2B55 | 0x3030
        | 0x303D | 0x3297 | 0x3299 | 0x1F000..=0x1FAFF)
}

/// A normalized (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            })
            && email.matches('@').count() == 1
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(email))
        } else {
            Err(ValueError::Email)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn bounded(raw: &str, min: usize, max: usize) -> Result<String, ValueError> {
    let n = raw.chars().count();
    if (min..=max).contains(&n) {
        Ok(raw.to_owned())
    } else {
        Err(ValueError::Length { min, max })
    }
}

/// A message body: 1 to 10,000 characters, not only white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageBody(String);

impl MessageBody {
    pub const MAX: usize = 10_000;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.trim().is_empty() {
            return Err(ValueError::Length { min: 1, max: Self::MAX });
        }
        bounded(raw, 1, Self::MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's or a thing's name: 1 to 200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub const MAX: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        bounded(raw.trim(), 1, Self::MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(Email::parse("  Alice@Example.COM ").map(|e| e.0), Ok("alice@example.com".into()));
        for bad in ["", "alice", "@x.io", "a@b", "a@@b.io", "a b@c.io", "a@.io", "a@b..io"] {
            assert_eq!(Email::parse(bad), Err(ValueError::Email), "{bad:?}");
        }
    }

    #[test]
    fn an_emoji_is_one_pictographic_grapheme() {
        for good in ["👍", "❤️", "🇫🇷", "👩‍👩‍👧", "👍🏽", "1️⃣", "✅"] {
            assert_eq!(Emoji::parse(good).map(|e| e.0), Ok(good.to_owned()), "{good:?}");
        }
        for bad in ["", "a", "1", "👍👍", ":+1:", "👍 ", " ", "é", "ab"] {
            assert_eq!(Emoji::parse(bad), Err(ValueError::Emoji), "{bad:?}");
        }
    }

    #[test]
    fn message_bodies_are_one_to_ten_thousand_characters() {
        assert!(MessageBody::parse("").is_err());
        assert!(MessageBody::parse("   ").is_err());
        assert!(MessageBody::parse(&"é".repeat(10_000)).is_ok());
        assert!(MessageBody::parse(&"a".repeat(10_001)).is_err());
    }
}
