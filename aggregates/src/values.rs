//! Values parsed once at the edge and trusted inside ("parse, don't validate").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("is not a valid email address")]
    Email,
    #[error("must be between {min} and {max} characters")]
    Length { min: usize, max: usize },
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
    fn message_bodies_are_one_to_ten_thousand_characters() {
        assert!(MessageBody::parse("").is_err());
        assert!(MessageBody::parse("   ").is_err());
        assert!(MessageBody::parse(&"é".repeat(10_000)).is_ok());
        assert!(MessageBody::parse(&"a".repeat(10_001)).is_err());
    }
}
