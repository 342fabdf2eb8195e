//! `parley demo [--rate N]`: serves, with a demo account (owner credentials and an API key for
//! the dashboard printed), its users, groups and direct conversations, and steady simulated
//! traffic (posts, reactions, edits, calls) until Ctrl-C.

use std::time::Duration;

use parley_aggregates::permissions::REGISTRY;
use parley_commands::services::{DirectStarted, Registration};
use parley_commands::{tokens, CommandContext};
use uuid::Uuid;

use super::shutdown_signal;
use crate::app::App;
use crate::config::Config;
use crate::http::Server;

const PEOPLE: [&str; 7] = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis"];
const LINES: [&str; 8] = [
    "shipping the release notes now",
    "who has the on-call pager this week?",
    "the dashboard looks great",
    "lunch at noon?",
    "pushed a fix for the flaky test",
    "can someone review my change?",
    "standup in five minutes",
    "the build is green again",
];
const EMOJI: [&str; 4] = ["👍", "🎉", "❤️", "👀"];

/// A user of the demo account and what they may do.
struct Person {
    ctx: CommandContext,
}

pub async fn run(app: App, config: &Config, rate: u32) -> anyhow::Result<()> {
    let server = Server::start(app.clone(), config).await?;
    let (owner, people, conversations, key) = seed(&app).await?;
    let base = format!("http://{}", server.addr);
    println!("Parley demo at {base}");
    println!("  owner: {} / {}", owner.0, owner.1);
    println!("  dashboard: {base}/dashboard?token={key}");
    println!("  API docs: {base}/docs");
    println!("  traffic: {rate} actions/s until Ctrl-C");
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(every);
    let mut n: usize = 0;
    let mut posted: Vec<(Uuid, Uuid, usize)> = Vec::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                if let Err(e) = act(&app, &people, &conversations, &mut posted, n).await {
                    tracing::debug!(error = %e, "a demo action was refused");
                }
                n += 1;
            }
        }
    }
    server.stop().await;
    Ok(())
}

/// The account: an owner, the people, two groups and a direct conversation per pair of the
/// first three; an API key with every permission for the dashboard.
async fn seed(app: &App) -> anyhow::Result<((String, String), Vec<Person>, Vec<Uuid>, String)> {
    let suffix = &Uuid::now_v7().simple().to_string()[20..];
    let password = tokens::generate();
    let email = format!("owner-{suffix}@demo.parley");
    let registered = app
        .commands
        .register(Registration {
            name: "Demo Owner".into(),
            email: email.clone(),
            password: password.clone(),
            account_name: Some("Parley demo".into()),
            ..Default::default()
        })
        .await?;
    let owner_ctx = context(&registered);
    let mut people = vec![Person { ctx: owner_ctx.clone() }];
    for name in PEOPLE {
        let invited = app
            .commands
            .invite(&owner_ctx, &format!("{}-{suffix}@demo.parley", name.to_lowercase()), "member")
            .await?;
        let joined = app
            .commands
            .register(Registration {
                name: name.into(),
                email: invited.email,
                password: tokens::generate(),
                invitation_token: Some(invited.token),
                ..Default::default()
            })
            .await?;
        people.push(Person { ctx: context(&joined) });
    }
    let ids: Vec<Uuid> = people.iter().filter_map(|p| p.ctx.user_id().ok()).collect();
    let mut conversations = Vec::new();
    for (title, members) in [("General", &ids[1..]), ("Engineering", &ids[1..4])] {
        let group = app.commands.start_group(&owner_ctx, title, members).await?;
        conversations.extend(group.aggregate.id);
    }
    for (a, b) in [(1, 2), (2, 3), (1, 3)] {
        let direct = app.commands.start_direct_with(&people[a].ctx, ids[b], None).await?.fresh()?;
        conversations.extend(match direct {
            DirectStarted::Created(done) => done.aggregate.id,
            DirectStarted::Existing(id) => Some(id),
        });
    }
    let everything: Vec<String> = REGISTRY.iter().map(|(_, name, _)| (*name).to_owned()).collect();
    let key = app.commands.create_api_key(&owner_ctx, "Demo dashboard", &everything, None).await?;
    Ok(((email, password), people, conversations, key.secret))
}

fn context(r: &parley_commands::services::Registered) -> CommandContext {
    let permissions = parley_aggregates::permissions::permissions_of(&r.roles);
    CommandContext::new(r.account_id, parley_commands::Actor::user(r.user_id, permissions))
}

/// One simulated action, in a steady mix: mostly posts, then reactions, edits and now and then
/// a call that is answered and hung up.
async fn act(
    app: &App,
    people: &[Person],
    conversations: &[Uuid],
    posted: &mut Vec<(Uuid, Uuid, usize)>,
    n: usize,
) -> anyhow::Result<()> {
    let commands = &app.commands;
    let person = &people[n % people.len()];
    let conversation = conversations[n % conversations.len()];
    match n % 20 {
        0..=11 => {
            let done = commands.post_message(&person.ctx, conversation, LINES[n % LINES.len()]).await?;
            if let Some(message) = done.events.iter().find_map(message_posted) {
                posted.push((conversation, message, n % people.len()));
                if posted.len() > 100 {
                    posted.remove(0);
                }
            }
        }
        12..=16 => {
            if let Some((_, message, _)) = posted.get(n % posted.len().max(1)) {
                commands.add_reaction(&person.ctx, *message, EMOJI[n % EMOJI.len()], None).await?;
            }
        }
        17 | 18 => {
            // The author of the latest message edits it.
            if let Some((conversation, message, author)) = posted.last() {
                commands
                    .edit_message(&people[*author].ctx, *conversation, *message, "(edited) still true", None)
                    .await?;
            }
        }
        _ => {
            let call = app.calls.start(&person.ctx, conversation, "audio").await?;
            if let Some(call_id) = call.aggregate.id {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let callee = people.iter().find(|p| p.ctx.user_id().ok() != person.ctx.user_id().ok());
                if let Some(callee) = callee {
                    let _ = app.calls.accept(&callee.ctx, conversation, call_id).await;
                }
                let _ = app.calls.hang_up(&person.ctx, conversation, call_id).await;
            }
        }
    }
    Ok(())
}

fn message_posted(event: &parley_aggregates::conversation::ConversationEvent) -> Option<Uuid> {
    match event {
        parley_aggregates::conversation::ConversationEvent::MessagePosted { message_id, .. } => {
            Some(*message_id)
        }
        _ => None,
    }
}
