use clap::Parser;
use inventory::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::telemetry::init(config.telemetry.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::shutdown::on_signal())
        .await?;
    Ok(())
}
