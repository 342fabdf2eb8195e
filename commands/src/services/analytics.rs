//! Sealing a day of an account's analytics: once the day is over and counted, its row is final.

use chrono::NaiveDate;
use parley_aggregates::analytics::{stream_id, AnalyticsDay, AnalyticsDayCommand};
use uuid::Uuid;

use super::Commands;
use crate::context::{Actor, CommandContext};
use crate::error::DispatchError;
use crate::unit_of_work::Executed;

impl Commands {
    /// Seals `account_id`'s `day` (the system decides it; sealing twice records nothing more).
    #[tracing::instrument(skip_all, fields(%account_id, %day))]
    pub async fn seal_analytics_day(
        &self,
        account_id: Uuid,
        day: NaiveDate,
    ) -> Result<Executed<AnalyticsDay>, DispatchError> {
        let ctx = CommandContext::new(account_id, Actor::system());
        let seal = AnalyticsDayCommand::Seal { account_id, day };
        self.dispatcher.execute::<AnalyticsDay>(&ctx, &stream_id(account_id, day), seal).await
    }
}
