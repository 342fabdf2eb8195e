//! A write transaction on the log: locks, reads under them, appends, and the rows written with
//! the events; the appended events are told to the node at commit.

use sqlx::{PgConnection, Postgres};

use crate::append::{self, Appended, StreamAppend, StreamHead};
use crate::error::StoreError;
use crate::event::{RecordedEvent, StreamKey};
use crate::read;
use crate::store::EventStore;

/// A write transaction on the log. Dropping it without [`StoreTransaction::commit`] rolls back.
pub struct StoreTransaction {
    tx: sqlx::Transaction<'static, Postgres>,
    store: EventStore,
    appended: bool,
    /// The appended events commit observers want, told at commit.
    observed: Vec<RecordedEvent>,
}

impl StoreTransaction {
    pub(crate) fn new(tx: sqlx::Transaction<'static, Postgres>, store: EventStore) -> Self {
        Self { tx, store, appended: false, observed: Vec::new() }
    }

    /// Locks the stream until commit and returns its head. Lock streams before writing
    /// anything else, in a consistent order when there are several.
    pub async fn lock_stream(&mut self, stream: &StreamKey) -> Result<StreamHead, StoreError> {
        append::lock_stream(&mut self.tx, stream).await
    }

    /// Locks several streams at once, before anything else is written; returns the
    /// transaction id. Use it when one transaction appends to more than one stream.
    pub async fn lock_streams(&mut self, streams: &[StreamKey]) -> Result<u64, StoreError> {
        append::lock_streams(&mut self.tx, streams).await
    }

    /// A stream's events after `after_version`, as this transaction sees them.
    pub async fn read_stream(
        &mut self,
        stream: &StreamKey,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(
            &mut self.tx,
            self.store.upcasters(),
            &stream.stream_type,
            &stream.stream_id,
            after_version,
            None,
        )
        .await
    }

    pub async fn append(&mut self, batch: &StreamAppend) -> Result<Appended, StoreError> {
        let appended = append::append(&mut self.tx, batch, self.store.now()).await?;
        self.appended |= !appended.events.is_empty();
        self.store.observable(batch, &appended, &mut self.observed);
        Ok(appended)
    }

    /// Appends to several streams in one round trip, in the order given, locking them all first
    /// (sorted as by [`StoreTransaction::lock_streams`], needed only to read them before).
    pub async fn append_all(&mut self, appends: &[&StreamAppend]) -> Result<Vec<Appended>, StoreError> {
        self.append_all_after(appends, &[]).await
    }

    /// [`StoreTransaction::append_all`], each stream of `appends[k]` also required to have the
    /// event `heads[k]` at its head when given (a decision on a state not yet committed).
    pub async fn append_all_after(
        &mut self,
        appends: &[&StreamAppend],
        heads: &[Option<uuid::Uuid>],
    ) -> Result<Vec<Appended>, StoreError> {
        let appended = append::append_all(&mut self.tx, appends, heads, self.store.now()).await?;
        self.appended |= appended.iter().any(|a| !a.events.is_empty());
        for (batch, placed) in appends.iter().zip(&appended) {
            self.store.observable(batch, placed, &mut self.observed);
        }
        Ok(appended)
    }

    /// The transaction's connection, for claims, index rows and idempotency records.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Rolls back now (dropping would queue the rollback until the connection is next used).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if self.appended {
            self.store.committed();
        }
        self.store.tell_observers(&self.observed);
        Ok(())
    }
}
