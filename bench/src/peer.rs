//! Parley's command path (load, decide, append) next to the cqrs-es + postgres-es peer built and
//! run beside it: the same aggregate (`Conversation`), the same command (starting a group) on
//! fresh streams, the same writers, each in a database of its own on the same server, with the
//! raw one-row-per-transaction limit measured in the same run.
//!
//! Parley does more per command than the peer: it locks the stream, chains the event's hash,
//! assigns the commit-safe position and writes the write side's rows (the group's membership for
//! fan-out) in the transaction. The peer inserts the event rows under their primary key.

use std::sync::Arc;

use parley_aggregates::conversation::{Conversation, ConversationCommand};
use parley_aggregates::values::Name;
use parley_commands::{Actor, CommandContext, Dispatcher, GroupCommit};
use parley_eventstore::{db, EventStore, Upcasters};
use postgres_es::PostgresCqrs;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::cpu;
use crate::store::{measure, raw_inserts};
use crate::Scratch;

/// The peer's tables, as postgres-es documents them (`db/init.sql` of its repository).
const PEER_SCHEMA: &[&str] = &[
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id   text NOT NULL,
        sequence       bigint CHECK (sequence >= 0) NOT NULL,
        event_type     text NOT NULL,
        event_version  text NOT NULL,
        payload        json NOT NULL,
        metadata       json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE snapshots (
        aggregate_type   text NOT NULL,
        aggregate_id     text NOT NULL,
        last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
        current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
        payload          json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
];

fn start_group(account_id: Uuid, creator_id: Uuid, conversation_id: Uuid, i: u64) -> ConversationCommand {
    ConversationCommand::StartGroup {
        conversation_id,
        account_id,
        title: Name::parse(&format!("benchmark group {i}")).expect("a name"),
        creator_id,
        member_ids: Vec::new(),
    }
}

async fn parley(
    dispatcher: Dispatcher,
    ctx: CommandContext,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let (dispatcher, ctx) = (Arc::new(dispatcher), Arc::new(ctx));
    measure(clients, seconds, move |_, i| {
        let (dispatcher, ctx) = (dispatcher.clone(), ctx.clone());
        async move {
            let id = Uuid::now_v7();
            let user = ctx.actor.id.expect("a user");
            dispatcher
                .execute::<Conversation>(&ctx, &id.to_string(), start_group(ctx.account_id, user, id, i))
                .await?;
            Ok(())
        }
    })
    .await
}

async fn grouped(
    group: GroupCommit<Conversation>,
    ctx: CommandContext,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let (group, ctx) = (Arc::new(group), Arc::new(ctx));
    measure(clients, seconds, move |_, i| {
        let (group, ctx) = (group.clone(), ctx.clone());
        async move {
            let id = Uuid::now_v7();
            let user = ctx.actor.id.expect("a user");
            group.execute(&ctx, &id.to_string(), start_group(ctx.account_id, user, id, i)).await?;
            Ok(())
        }
    })
    .await
}

async fn peer(cqrs: Arc<PostgresCqrs<Conversation>>, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let (account_id, creator_id) = (Uuid::now_v7(), Uuid::now_v7());
    measure(clients, seconds, move |_, i| {
        let cqrs = cqrs.clone();
        async move {
            let id = Uuid::now_v7();
            cqrs.execute(&id.to_string(), start_group(account_id, creator_id, id, i))
                .await
                .map_err(|e| anyhow::anyhow!("the peer refused a command: {e}"))?;
            Ok(())
        }
    })
    .await
}

pub async fn run(server: &PgConnectOptions, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let ours = Scratch::new(server, "commands").await?;
    let theirs = Scratch::bare(server, "peer").await?;
    let pool = db::pool(ours.options.clone(), clients as u32 + 2).await?;
    let peer_pool = db::pool(theirs.options.clone(), clients as u32 + 2).await?;
    let mut conn = PgConnection::connect_with(&theirs.options).await?;
    for statement in PEER_SCHEMA {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    conn.close().await?;

    let store = EventStore::new(pool.clone(), Upcasters::default());
    let dispatcher = Dispatcher::new(store);
    let group = GroupCommit::<Conversation>::new(dispatcher.clone());
    let user = Uuid::now_v7();
    let ctx = CommandContext::new(Uuid::now_v7(), Actor::user(user, Vec::new()));
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<Conversation>(peer_pool.clone(), Vec::new(), ()));

    // Warm up every path (connections, statement caches), then measure each in turn.
    parley(dispatcher.clone(), ctx.clone(), clients, 1).await?;
    grouped(group.clone(), ctx.clone(), clients, 1).await?;
    peer(cqrs.clone(), clients, 1).await?;
    let (raw, raw_cpu) = cpu::costed(raw_inserts(pool.clone(), clients, seconds)).await?;
    let (theirs_rate, theirs_cpu) = cpu::costed(peer(cqrs.clone(), clients, seconds)).await?;
    let (ours_rate, ours_cpu) =
        cpu::costed(parley(dispatcher.clone(), ctx.clone(), clients, seconds)).await?;
    let (grouped_rate, grouped_cpu) = cpu::costed(grouped(group, ctx, clients, seconds)).await?;

    println!();
    println!("commands on fresh streams: start a group ({clients} writers, {seconds} s each)");
    println!("  raw single-row INSERT transactions/s     {raw:>10.0}  (the limit)");
    println!(
        "  cqrs-es + postgres-es commands/s         {theirs_rate:>10.0}  {:>5.2} x raw",
        theirs_rate / raw
    );
    println!(
        "  Parley commands/s                        {ours_rate:>10.0}  {:>5.2} x raw  {:>5.2} x peer (target >= 1.5)",
        ours_rate / raw,
        ours_rate / theirs_rate
    );
    println!(
        "  Parley with group commit commands/s      {grouped_rate:>10.0}  {:>5.2} x raw  {:>5.2} x peer (target >= 3)",
        grouped_rate / raw,
        grouped_rate / theirs_rate
    );
    let per = |name: &str, rate: f64, spent: (f64, f64)| cpu::print_per_op(name, rate, seconds, spent);
    per("raw INSERT", raw, raw_cpu);
    per("cqrs-es + postgres-es", theirs_rate, theirs_cpu);
    per("Parley", ours_rate, ours_cpu);
    per("Parley, group commit", grouped_rate, grouped_cpu);
    pool.close().await;
    peer_pool.close().await;
    ours.drop_db().await?;
    theirs.drop_db().await
}
