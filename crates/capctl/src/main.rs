//! `capctl`: drive the CAP services from the command line.

use std::io::IsTerminal;
use std::process::ExitCode;

use capctl::auth::{self, DevKeysArgs, Minter, SigningArgs, TokenArgs};
use capctl::celebrity::{self, CelebrityReadsArgs, FollowerLoadArgs};
use capctl::client::ServiceClient;
use capctl::commands::{self, Everyday};
use capctl::dead_letters::{self, DlqAction, DlqArgs};
use capctl::fanout::{self, FanoutArgs};
use capctl::flash_sale::{self, FlashSaleArgs};
use capctl::raw_cql::{self, CqlInsertArgs};
use capctl::relay_catchup::{self, RelayCatchupArgs, RelayPhase};
use capctl::reserve_load::{self, ReserveLoadArgs};
use capctl::timeline_load::{self, PostLoadArgs, ReadLoadArgs};
use clap::{Parser, Subcommand};

/// Drive the CAP services: demos, load and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "capctl", version, about)]
struct Cli {
    /// Base URL of the inventory service. `flash-sale` takes several (repeat the
    /// flag, or separate with commas) and spreads its buyers over them
    /// round-robin; every other command takes one.
    #[arg(
        long,
        env = "CAPCTL_INVENTORY_URL",
        default_value = "http://127.0.0.1:8081",
        value_delimiter = ',',
        global = true
    )]
    inventory_url: Vec<String>,

    /// Base URL of the timeline service.
    #[arg(
        long,
        env = "CAPCTL_TIMELINE_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    timeline_url: String,

    /// Bearer token sent as `Authorization: Bearer` by the one-request
    /// commands (`capctl token SUBJECT` mints one). The load commands mint
    /// their own per simulated user with --signing-key instead.
    #[arg(long, env = "CAPCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    #[command(flatten)]
    signing: SigningArgs,

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
    /// Print a development token for SUBJECT, minted with --signing-key.
    Token(TokenArgs),
    /// Create the development key pair (signing and verifying key) if it is missing.
    DevKeys(DevKeysArgs),
    /// Race many buyers for little stock and check that nothing is oversold.
    FlashSale(FlashSaleArgs),
    /// Build a follow graph, post, wait for every timeline to converge; count missing and duplicates.
    Fanout(FanoutArgs),
    /// Benchmark: hold one unit of existing products in closed loops for a fixed time.
    ReserveLoad(ReserveLoadArgs),
    /// Benchmark: build a graph, post in closed loops for a fixed time, time the fan-out.
    PostLoad(PostLoadArgs),
    /// Benchmark: read timelines in closed loops for a fixed time at one consistency.
    ReadLoad(ReadLoadArgs),
    /// Benchmark: the fan-out's timeline inserts straight to Cassandra, no service in between.
    CqlInsertLoop(CqlInsertArgs),
    /// Benchmark: posts accepted while NATS is down, and how fast the outbox relay catches up.
    RelayCatchup(RelayCatchupArgs),
    /// Benchmark: an author's followers written straight to Cassandra (a celebrity's graph).
    FollowerLoad(FollowerLoadArgs),
    /// Benchmark: how soon a celebrity's posts show in a sample of followers' timelines.
    CelebrityReads(CelebrityReadsArgs),
    /// Dead letters of the timeline fan-out: list them, or replay them to the work stream.
    Dlq(DlqArgs),
    #[command(flatten)]
    Everyday(Everyday),
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
    let pool = match &cli.command {
        Command::FlashSale(args) => args.concurrency,
        Command::Fanout(args) => args.concurrency,
        Command::ReserveLoad(args) => args.shape.concurrency,
        Command::PostLoad(args) => args.shape.concurrency.max(args.graph_concurrency),
        Command::ReadLoad(args) => args.shape.concurrency,
        Command::RelayCatchup(RelayCatchupArgs {
            phase: RelayPhase::Post(args),
        }) => args.concurrency,
        Command::RelayCatchup(_) => 32,
        Command::CelebrityReads(args) => args.concurrency,
        _ => 4,
    };
    let inventories = cli
        .inventory_url
        .iter()
        .map(|url| ServiceClient::new("inventory", url, pool))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let [inventory, ..] = inventories.as_slice() else {
        anyhow::bail!("--inventory-url is empty");
    };
    if inventories.len() > 1 && !matches!(cli.command, Command::FlashSale(_)) {
        anyhow::bail!("only flash-sale takes several --inventory-url");
    }
    let timeline = ServiceClient::new("timeline", &cli.timeline_url, pool)?;
    let progress = !cli.json && std::io::stderr().is_terminal();
    // The load commands act as many subjects, each with a token minted here.
    let minter = || Minter::load(&cli.signing);
    match cli.command {
        Command::Status => status(inventory, &timeline, cli.json).await,
        Command::Token(args) => {
            println!("{}", auth::mint_token(&cli.signing, &args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::DevKeys(args) => {
            let keys = auth::dev_keys(&args)?;
            if cli.json {
                println!("{keys}");
            } else {
                println!(
                    "signing key   {}\nverifying key {}",
                    keys["signing_key"].as_str().unwrap_or_default(),
                    keys["verifying_key"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::FlashSale(args) => {
            // The bar redraws stderr in place: only when both streams are a terminal,
            // so that a report piped or redirected never interleaves with it.
            let progress = progress && std::io::stdout().is_terminal();
            let report = flash_sale::run(&inventories, &args, &minter()?, progress).await?;
            print(&report, cli.json)?;
            Ok(exit_code(report.invariant_holds))
        }
        Command::Fanout(args) => {
            let report = fanout::run(&timeline, &args, &minter()?, progress).await?;
            print(&report, cli.json)?;
            Ok(exit_code(report.invariant_holds && report.converged))
        }
        Command::ReserveLoad(args) => {
            print(
                &reserve_load::run(inventory, &args, &minter()?).await?,
                cli.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PostLoad(args) => {
            print(
                &timeline_load::post_load(&timeline, &args, &minter()?).await?,
                cli.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ReadLoad(args) => {
            print(
                &timeline_load::read_load(&timeline, &args, &minter()?).await?,
                cli.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CqlInsertLoop(args) => {
            print(&raw_cql::run(&args).await?, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RelayCatchup(RelayCatchupArgs { phase }) => {
            match phase {
                RelayPhase::Graph(args) => {
                    print(
                        &relay_catchup::graph(&timeline, &args, &minter()?).await?,
                        cli.json,
                    )?;
                }
                RelayPhase::Post(args) => {
                    print(
                        &relay_catchup::post(&timeline, &args, &minter()?).await?,
                        cli.json,
                    )?;
                }
                RelayPhase::Measure(args) => {
                    print(
                        &relay_catchup::measure(&timeline, &args, &minter()?).await?,
                        cli.json,
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::FollowerLoad(args) => {
            print(&celebrity::load_followers(&args).await?, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CelebrityReads(args) => {
            print(
                &celebrity::celebrity_reads(&timeline, &args, &minter()?).await?,
                cli.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqArgs { action }) => {
            match action {
                DlqAction::List(selection) => {
                    print(&dead_letters::list(&selection).await?, cli.json)?;
                }
                DlqAction::Replay(selection) => {
                    print(&dead_letters::replay(&selection).await?, cli.json)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Everyday(command) => {
            let token = cli.token.as_deref();
            let answer = commands::run(
                command,
                &inventory.with_optional_token(token),
                &timeline.with_optional_token(token),
            )
            .await?;
            println!(
                "{}",
                if cli.json {
                    answer.to_string()
                } else {
                    serde_json::to_string_pretty(&answer)?
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print<T: serde::Serialize + std::fmt::Display>(report: &T, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn status(
    inventory: &ServiceClient,
    timeline: &ServiceClient,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut all_ready = true;
    let mut report = serde_json::Map::new();
    for (name, client) in [("inventory", inventory), ("timeline", timeline)] {
        let entry = match client.get("/readyz").await {
            Ok(answer) => {
                all_ready &= answer.is_success();
                serde_json::json!({ "url": client.url(""), "ready": answer.is_success(), "checks": answer.body["checks"] })
            }
            Err(error) => {
                all_ready = false;
                serde_json::json!({ "url": client.url(""), "ready": false, "error": format!("{error:#}") })
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
            let mut line = format!(
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
                line.push_str(&format!("  [{}]", list.join(", ")));
            }
            if let Some(error) = entry["error"].as_str() {
                line.push_str(&format!("  {error}"));
            }
            println!("{line}");
        }
    }
    Ok(exit_code(all_ready))
}
