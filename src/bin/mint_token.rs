//! `mint-token`: signs an HS256 token for the hub, for development and scripts.
//!
//! ```text
//! HUB_SECRET=… cargo run --bin mint-token -- --sub alice --rooms 'chat:*,lobby' \
//!     --can subscribe,publish --ttl 3600
//! ```
//! Prints the token and nothing else, so `$(…)` captures it. The secret is
//! read from the environment only, never from the command line (which
//! other users of the machine can see).

use edge_hub::core::auth::{mint, Claims};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: HUB_SECRET=… mint-token --sub USER --rooms ROOM[,PREFIX*…] \
[--can subscribe,publish] [--ttl SECONDS (default 3600)] [--nbf UNIX_SECONDS]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("mint-token: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let secret = std::env::var("HUB_SECRET").map_err(|_| "HUB_SECRET is not set".to_string())?;
    if secret.is_empty() {
        return Err("HUB_SECRET is empty".into());
    }
    let mut sub = None;
    let mut rooms = None;
    let mut can = None;
    let mut ttl: u64 = 3600;
    let mut nbf = None;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sub" => sub = Some(value()?),
            "--rooms" => rooms = Some(list(&value()?)),
            "--can" => can = Some(list(&value()?)),
            "--ttl" => {
                ttl = value()?
                    .parse()
                    .map_err(|_| "--ttl takes seconds".to_string())?
            }
            "--nbf" => {
                nbf = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--nbf takes unix seconds".to_string())?,
                )
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = Claims {
        sub: sub.ok_or("--sub is required")?,
        exp: now + ttl,
        nbf,
        rooms: rooms.ok_or("--rooms is required")?,
        can,
    };
    Ok(mint(&claims, secret.as_bytes()))
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
