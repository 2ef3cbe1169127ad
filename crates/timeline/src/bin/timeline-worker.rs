use clap::Parser;
use timeline::{WorkerApp, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    service_kit::telemetry::init(config.telemetry.log_format);
    let worker = WorkerApp::build(config).await?;
    worker
        .run_until_stopped(service_kit::shutdown::on_signal())
        .await
}
