//! `cap-lab`: the CAP lab. A 3-node Apache Cassandra cluster (RF=3),
//! PostgreSQL, NATS and the services, in a network namespace of their own;
//! real faults (nftables partitions, SIGKILL/SIGTERM/SIGSTOP); every claim of
//! the trade-off as a scenario that prints what was done, what every client
//! saw and a verdict. Run it with `make lab` (`scripts/lab.sh` makes the
//! namespace); `SCENARIO=name` runs one (`--list` names them).
//!
//! # Layout
//!
//! - [`lab`]: starting everything, and putting it back after each scenario.
//! - [`cluster`]: the Cassandra nodes, statements pinned to one coordinator,
//!   what nodes report (replicas alive, pending hints), nodetool.
//! - [`firewall`]: partitions as nftables rules matching per-process group ids.
//! - [`pg_cluster`]: the highly available PostgreSQL: Patroni, etcd, HAProxy.
//! - [`services`]: PostgreSQL and NATS via the project's scripts; the service processes.
//! - [`http`]: timed HTTP calls that keep what a client saw.
//! - [`history`]: recorded histories and the linearizability checker.
//! - [`memory`]: the lab's peak resident memory.
//! - [`report`]: steps, tables and checks, printed as Markdown.
//! - [`scenarios`]: one module per claim.

mod cluster;
mod firewall;
mod history;
mod http;
mod lab;
mod memory;
mod pg_cluster;
mod report;
mod scenarios;
mod services;

use std::process::ExitCode;

use clap::Parser;

use crate::scenarios::Scenario;

#[derive(Debug, Parser)]
#[command(
    name = "cap-lab",
    about = "The CAP lab: real partitions, observed trade-offs."
)]
struct Args {
    /// Run only these scenarios (comma-separated; every scenario when absent).
    #[arg(long, env = "SCENARIO", value_delimiter = ',', value_enum)]
    scenario: Vec<Scenario>,

    /// List the scenarios and the claim each tests, then exit.
    #[arg(long)]
    list: bool,

    #[command(flatten)]
    paths: lab::Paths,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // One TLS provider (ring) for the whole workspace's HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.list {
        for scenario in Scenario::ALL {
            println!("{:<18} {}", scenario.name(), scenario.claim());
        }
        return ExitCode::SUCCESS;
    }
    let selected = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    // Ctrl-C and SIGTERM end the lab; the namespace's init (scripts/lab.sh)
    // then exits, and the kernel ends every process the lab started.
    tokio::select! {
        code = run(args.paths, &selected) => code,
        signal = shutdown_signal() => {
            eprintln!("cap-lab: {signal}, tearing the lab down");
            ExitCode::from(130)
        }
    }
}

async fn run(paths: lab::Paths, selected: &[Scenario]) -> ExitCode {
    let memory = memory::PeakMemory::start();
    println!("# CAP lab\n");
    let lab = match lab::Lab::start(paths).await {
        Ok(lab) => lab,
        Err(error) => {
            eprintln!("cap-lab: the lab did not start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "- lab up in {:.1} s (cluster {:.1} s)",
        lab.stack_start.as_secs_f64(),
        lab.cluster_start.as_secs_f64()
    );
    let mut results = Vec::new();
    let mut text = String::new();
    for &scenario in selected {
        let (passed, report) = scenario.run(&lab).await;
        text.push_str(&report);
        if let Err(error) = lab.recover().await {
            eprintln!(
                "cap-lab: could not put the lab back after {}: {error:#}",
                scenario.name()
            );
            results.push((scenario, passed));
            break;
        }
        results.push((scenario, passed));
    }
    let passed = results.iter().filter(|(_, passed)| *passed).count();
    let failed = results.len() - passed;
    let skipped = selected.len() - results.len();
    let mut summary = String::from("\n## Summary\n\n| scenario | verdict |\n|---|---|\n");
    for (scenario, ok) in &results {
        summary.push_str(&format!(
            "| {} | {} |\n",
            scenario.name(),
            if *ok { "passed" } else { "FAILED" }
        ));
    }
    summary.push_str(&format!(
        "\nCluster start: {:.1} s (3 Cassandra nodes up and seeing each other); PostgreSQL \
         cluster: {:.1} s (a primary and two streaming standbys); whole lab up: {:.1} s; \
         peak memory of the lab: {} MiB (PSS summed over every process of its namespace)\n",
        lab.cluster_start.as_secs_f64(),
        lab.pg_cluster_start.as_secs_f64(),
        lab.stack_start.as_secs_f64(),
        memory.peak_mib()
    ));
    summary.push_str(&format!("\n{passed} passed, {failed} failed\n"));
    if skipped > 0 {
        summary.push_str(&format!(
            "{skipped} not run (the lab could not be put back)\n"
        ));
    }
    print!("{summary}");
    text.push_str(&summary);
    let report = lab.file("report.md");
    if std::fs::write(&report, text).is_ok() {
        println!("(report written to {})", report.display());
    }
    if failed == 0 && skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "interrupted",
        _ = terminate.recv() => "terminated",
    }
}
