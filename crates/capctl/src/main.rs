//! `capctl`: the command-line client of the CAP services.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Drive the CAP services from the command line.
#[derive(Debug, Parser)]
#[command(name = "capctl", version, about)]
struct Cli {
    /// Base URL of the inventory service.
    #[arg(
        long,
        env = "CAPCTL_INVENTORY_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    inventory_url: String,

    /// Base URL of the timeline service.
    #[arg(
        long,
        env = "CAPCTL_TIMELINE_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    timeline_url: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether each service is ready, and what its stores say.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    match cli.command {
        Command::Status => status(&client, &cli.inventory_url, &cli.timeline_url, cli.json).await,
    }
}

async fn status(
    client: &reqwest::Client,
    inventory: &str,
    timeline: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut all_ready = true;
    let mut report = serde_json::Map::new();
    for (name, base) in [("inventory", inventory), ("timeline", timeline)] {
        let url = format!("{}/readyz", base.trim_end_matches('/'));
        let entry = match client.get(&url).send().await {
            Ok(response) => {
                let ready = response.status().is_success();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                all_ready &= ready;
                serde_json::json!({ "url": base, "ready": ready, "checks": body["checks"] })
            }
            Err(error) => {
                all_ready = false;
                serde_json::json!({ "url": base, "ready": false, "error": format!("not reachable: {error}") })
            }
        };
        report.insert(name.to_owned(), entry);
    }
    if json {
        println!("{}", serde_json::Value::Object(report));
    } else {
        for (name, entry) in &report {
            let state = if entry["ready"] == true {
                "ready"
            } else {
                "NOT READY"
            };
            print!(
                "{name:<10} {state:<10} {}",
                entry["url"].as_str().unwrap_or_default()
            );
            if let Some(checks) = entry["checks"].as_array() {
                let list: Vec<String> = checks
                    .iter()
                    .map(|c| {
                        format!(
                            "{}={}",
                            c["name"].as_str().unwrap_or("?"),
                            c["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                print!("  [{}]", list.join(", "));
            }
            if let Some(error) = entry["error"].as_str() {
                print!("  {error}");
            }
            println!();
        }
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
