//! Values of the creator platform, each parsed once at the edge of the domain.

use serde::{Deserialize, Serialize};

/// Why a value was refused, for a `validation_failed` answer on its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreatorValueError {
    #[error("must be 1 to 63 characters of a-z, 0-9 and -")]
    Slug,
    #[error("must be one of live_stream, course, community, consultation, digital_product")]
    ExperienceType,
    #[error("must be between 0 and 999999")]
    Price,
    #[error("must be a three-letter ISO 4217 code")]
    Currency,
    #[error("must be at most {0} characters")]
    TooLong(usize),
}

/// A space's address within its account: `a-z0-9-`, 1 to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub const MAX: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, CreatorValueError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(raw.to_owned())).ok_or(CreatorValueError::Slug)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an experience is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperienceType {
    LiveStream,
    Course,
    Community,
    Consultation,
    DigitalProduct,
}

impl ExperienceType {
    pub fn parse(raw: &str) -> Result<Self, CreatorValueError> {
        Ok(match raw {
            "live_stream" => Self::LiveStream,
            "course" => Self::Course,
            "community" => Self::Community,
            "consultation" => Self::Consultation,
            "digital_product" => Self::DigitalProduct,
            _ => return Err(CreatorValueError::ExperienceType),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::LiveStream => "live_stream",
            Self::Course => "course",
            Self::Community => "community",
            Self::Consultation => "consultation",
            Self::DigitalProduct => "digital_product",
        }
    }
}

/// A price in the currency's minor unit: 0 (free) to 999,999.
pub fn price_cents(raw: i64) -> Result<i64, CreatorValueError> {
    (0..=999_999).contains(&raw).then_some(raw).ok_or(CreatorValueError::Price)
}

/// An ISO 4217 code, stored lowercase (`usd`), as payment providers take it.
pub fn currency(raw: &str) -> Result<String, CreatorValueError> {
    let lower = raw.trim().to_ascii_lowercase();
    (lower.len() == 3 && lower.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(lower)
        .ok_or(CreatorValueError::Currency)
}

/// A description as given, at most 5,000 characters, with HTML tags removed before it is stored
/// (so no markup a client renders can come from another user).
pub fn description(raw: &str) -> Result<String, CreatorValueError> {
    const MAX: usize = 5000;
    if raw.chars().count() > MAX {
        return Err(CreatorValueError::TooLong(MAX));
    }
    Ok(strip_tags(raw))
}

/// The text outside `<...>` tags; `<script>` and `<style>` lose their content too.
fn strip_tags(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('>') else {
            // A lone `<` is text.
            out.push_str(after);
            return out;
        };
        let tag = after[1..close].trim().to_ascii_lowercase();
        rest = &after[close + 1..];
        for hidden in ["script", "style"] {
            if tag == hidden || tag.starts_with(&format!("{hidden} ")) {
                let end = format!("</{hidden}");
                rest = match rest.to_ascii_lowercase().find(&end) {
                    Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                    None => "",
                };
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_letters_digits_and_dashes() {
        assert!(Slug::parse("launch-2026").is_ok());
        for bad in ["", "Launch", "a b", "ü", "a_b", &"a".repeat(64)] {
            assert_eq!(Slug::parse(bad), Err(CreatorValueError::Slug), "{bad:?}");
        }
    }

    #[test]
    fn prices_are_bounded_and_currencies_lowercased() {
        assert_eq!(price_cents(0), Ok(0));
        assert_eq!(price_cents(999_999), Ok(999_999));
        assert!(price_cents(-1).is_err() && price_cents(1_000_000).is_err());
        assert_eq!(currency("USD"), Ok("usd".into()));
        assert!(currency("dollars").is_err() && currency("u1d").is_err());
    }

    #[test]
    fn descriptions_lose_their_markup() {
        assert_eq!(description("<b>Live</b> at <i>noon</i>").unwrap(), "Live at noon");
        assert_eq!(description("a <script>alert(1)</script>b").unwrap(), "a b");
        assert_eq!(description("1 < 2").unwrap(), "1 < 2");
        assert!(description(&"x".repeat(5001)).is_err());
    }
}
