//! `parley keys list | rotate | retire KID`: the access-token signing keys. A rotation adds a
//! key that signs from now on (every node follows within a second, none restarts), the others
//! still verifying; retiring a key refuses its tokens everywhere. Rotate, wait for the old
//! tokens to expire (15 minutes), then retire the old key.

use std::process::ExitCode;

use clap::Subcommand;
use comfy_table::Table;

use crate::app::App;
use crate::signing_keys;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key: its id, when it was added and retired, and which one signs.
    List,
    /// Add a key that signs from now on; the others keep verifying.
    Rotate,
    /// Refuse the tokens of a key from now on (not the last live one).
    Retire { kid: String },
}

pub async fn run(app: &App, command: KeysCommand, configured: Option<&str>) -> anyhow::Result<ExitCode> {
    let pool = app.store.pool();
    signing_keys::ensure(pool, configured).await?;
    match command {
        KeysCommand::List => {
            let keys = signing_keys::list(pool).await?;
            let signing = keys.iter().find(|k| k.retired_at.is_none()).map(|k| k.kid.clone());
            let mut table = Table::new();
            table.set_header(["kid", "added", "retired", "role"]);
            for k in &keys {
                let role = match (&k.retired_at, Some(&k.kid) == signing.as_ref()) {
                    (Some(_), _) => "retired",
                    (None, true) => "signs and verifies",
                    (None, false) => "verifies",
                };
                let at =
                    |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                table.add_row([
                    k.kid.clone(),
                    at(&k.created_at),
                    k.retired_at.as_ref().map(at).unwrap_or_default(),
                    role.into(),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate => {
            let kid = signing_keys::rotate(pool).await?;
            println!("key {kid} signs from now on (every node within a second); the others still verify");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Retire { kid } => match signing_keys::retire(pool, &kid).await {
            Ok(()) => {
                println!("key {kid} is retired: its tokens are refused on every node within a second");
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ (signing_keys::RetireError::Unknown(_) | signing_keys::RetireError::Last(_))) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
    }
}
