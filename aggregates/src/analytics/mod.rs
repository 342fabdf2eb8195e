//! The `AnalyticsDay` aggregate: whether an account's UTC day of analytics is sealed (complete).
//! One stream per account and day, its id `<account_id>:<YYYY-MM-DD>`. The counters themselves
//! are a projection of the log; sealing is a decision, so it is an event, and a rebuild of the
//! projection reproduces which days were sealed and when.

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream id of `account_id`'s `day`.
pub fn stream_id(account_id: Uuid, day: NaiveDate) -> String {
    format!("{account_id}:{day}")
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnalyticsDayCommand {
    /// The day is over and counted: its row is final. Sealing a sealed day changes nothing.
    Seal { account_id: Uuid, day: NaiveDate },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnalyticsDayEvent {
    #[serde(rename = "AnalyticsDaySealed")]
    AnalyticsDaySealed { account_id: Uuid, day: NaiveDate },
}

impl crate::catalog::EventTypes for AnalyticsDayEvent {
    const TYPES: &'static [&'static str] = &["AnalyticsDaySealed"];
}

impl DomainEvent for AnalyticsDayEvent {
    fn event_type(&self) -> String {
        match self {
            AnalyticsDayEvent::AnalyticsDaySealed { .. } => "AnalyticsDaySealed".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Sealing cannot fail: there is nothing to refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsDayError {}

impl From<AnalyticsDayError> for crate::DomainError {
    fn from(never: AnalyticsDayError) -> Self {
        match never {}
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsDay {
    pub sealed: bool,
}

impl Aggregate for AnalyticsDay {
    const TYPE: &'static str = "AnalyticsDay";
    type Command = AnalyticsDayCommand;
    type Event = AnalyticsDayEvent;
    type Error = AnalyticsDayError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AnalyticsDayCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AnalyticsDayError> {
        match command {
            AnalyticsDayCommand::Seal { account_id, day } => {
                if !self.sealed {
                    sink.write(AnalyticsDayEvent::AnalyticsDaySealed { account_id, day }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AnalyticsDayEvent) {
        match event {
            AnalyticsDayEvent::AnalyticsDaySealed { .. } => self.sealed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    const ACCOUNT: Uuid = Uuid::from_u128(1);

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default()
    }

    #[test]
    fn a_day_is_sealed_once() {
        let sealed = AnalyticsDayEvent::AnalyticsDaySealed { account_id: ACCOUNT, day: day() };
        TestFramework::<AnalyticsDay>::with(())
            .given_no_previous_events()
            .when(AnalyticsDayCommand::Seal { account_id: ACCOUNT, day: day() })
            .then_expect_events(vec![sealed.clone()]);
        TestFramework::<AnalyticsDay>::with(())
            .given(vec![sealed])
            .when(AnalyticsDayCommand::Seal { account_id: ACCOUNT, day: day() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn stored_names_are_the_event_types() {
        crate::payload::assert_stored_names(&[AnalyticsDayEvent::AnalyticsDaySealed {
            account_id: ACCOUNT,
            day: day(),
        }]);
    }
}
