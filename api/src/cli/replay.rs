//! `parley replay events | state | verify | export | import`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parley_eventstore::{EventFilter, LogCursor};
use parley_replay::portable::{export_to_file, import_file, Progress};
use parley_replay::{events, state, to_json, verify, AsOf, ChainHead};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Read the log (all matching events unless --limit).
    Events {
        #[arg(long)]
        account: Option<Uuid>,
        #[arg(long)]
        stream_type: Option<String>,
        #[arg(long)]
        stream_id: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        actor: Option<Uuid>,
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        #[arg(long)]
        after: Option<LogCursor>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// An aggregate as it was.
    State {
        stream_type: String,
        stream_id: String,
        #[arg(long, conflicts_with = "version")]
        as_of: Option<DateTime<Utc>>,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Recompute every hash chain; exit 1 naming each altered, missing or reordered event.
    Verify {
        #[arg(long)]
        account: Option<Uuid>,
        /// Write every stream's chain head (JSON lines) to this file, to keep elsewhere.
        #[arg(long)]
        heads_out: Option<std::path::PathBuf>,
        /// Compare with chain heads kept earlier: detects truncation and rewritten tails.
        #[arg(long)]
        heads: Option<std::path::PathBuf>,
    },
    /// Write a portable copy of the log (JSON lines: a header, then one event per line) to a file,
    /// whole or not at all.
    Export {
        /// The file to write (replaced only once the export is complete).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Only this account's streams (each one whole).
        #[arg(long)]
        account: Option<Uuid>,
    },
    /// Import a portable copy into an empty store: every hash chain and the header are checked
    /// first; any fault and nothing is imported.
    Import {
        /// A file written by `parley replay export`.
        file: std::path::PathBuf,
    },
}

impl ReplayCommand {
    /// Whether the command may bring the schema up to date (an import fills a new database).
    pub fn migrates(&self) -> bool {
        matches!(self, ReplayCommand::Import { .. })
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new(prefix: &'static str) -> anyhow::Result<Self> {
        let bar = ProgressBar::new(0);
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")?
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        Ok(Self(bar))
    }
}

impl Progress for Bar {
    fn total(&self, events: u64) {
        self.0.set_length(events);
    }

    fn advance(&self, events: u64) {
        self.0.inc(events);
    }
}

pub async fn run(app: &App, command: ReplayCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        ReplayCommand::Events {
            account,
            stream_type,
            stream_id,
            event_type,
            actor,
            since,
            until,
            after,
            limit,
            format,
        } => {
            let filter = EventFilter {
                account_id: account,
                stream_type,
                stream_id,
                event_type,
                actor_id: actor,
                correlation_id: None,
                since,
                until,
                after: after.unwrap_or_default(),
            };
            let mut table = Table::new();
            table.set_header(["position", "recorded at", "stream", "version", "event", "actor"]);
            let mut failed = None;
            events(&app.store, &filter, limit, |page| {
                for e in page {
                    match format {
                        Format::Jsonl => {
                            if let Err(err) = writeln!(out, "{}", to_json(e)) {
                                failed.get_or_insert(err);
                            }
                        }
                        Format::Table => {
                            table.add_row([
                                e.cursor().to_string(),
                                e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                format!("{}/{}", e.stream_type, e.stream_id),
                                e.version.to_string(),
                                e.event_type.clone(),
                                e.actor_id().map(|a| a.to_string()).unwrap_or_else(|| "system".into()),
                            ]);
                        }
                    }
                }
            })
            .await?;
            if let Some(err) = failed {
                return Err(err.into());
            }
            if let Format::Table = format {
                writeln!(out, "{table}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::State { stream_type, stream_id, as_of, version } => {
            let as_of = match (as_of, version) {
                (Some(t), _) => AsOf::Time(t),
                (None, Some(v)) => AsOf::Version(v),
                (None, None) => AsOf::Latest,
            };
            let s = state(&app.store, &stream_type, &stream_id, as_of).await?;
            let json = serde_json::json!({
                "stream_type": s.stream_type,
                "stream_id": s.stream_id,
                "version": s.version,
                "state": s.state,
                "events": s.events.iter().map(to_json).collect::<Vec<_>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Verify { account, heads_out, heads } => {
            let known: Vec<ChainHead> = match heads {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(serde_json::from_str)
                    .collect::<Result<_, _>>()
                    .context("heads file is not JSON lines of chain heads")?,
                None => Vec::new(),
            };
            let report = verify(app.store.pool(), account, &known).await?;
            if let Some(path) = heads_out {
                let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                for h in &report.heads {
                    writeln!(file, "{}", serde_json::to_string(h)?)?;
                }
                file.flush()?;
            }
            for p in &report.problems {
                let at = p.position.map(|p| format!(" at position {p}")).unwrap_or_default();
                let id = p.event_id.map(|e| format!(" (event {e})")).unwrap_or_default();
                writeln!(
                    out,
                    "{:?}: {}/{} version {}{at}{id}: {}",
                    p.kind, p.stream_type, p.stream_id, p.version, p.detail
                )?;
            }
            writeln!(
                out,
                "verified {} events in {} streams: {}",
                report.events,
                report.streams,
                if report.ok() { "ok".to_string() } else { format!("{} problems", report.problems.len()) }
            )?;
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        ReplayCommand::Export { out: path, account } => {
            let bar = Bar::new("export")?;
            let exported = export_to_file(app.store.pool(), account, &path, &bar)
                .await
                .context("export failed, no file was written")?;
            bar.0.finish_and_clear();
            writeln!(
                out,
                "exported {} events of {} streams to {}",
                exported.events,
                exported.streams,
                path.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Import { file } => {
            let bar = Bar::new("import")?;
            let imported =
                import_file(&app.store, &file, &bar).await.context("import refused, nothing was imported")?;
            bar.0.finish_and_clear();
            writeln!(
                out,
                "imported {} events of {} streams (positions up to {}); read models rebuild from the log when \
                 the server starts",
                imported.events, imported.streams, imported.last_position
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
