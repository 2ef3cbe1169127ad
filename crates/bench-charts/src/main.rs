//! `bench-charts RAW_DIR OUT_DIR`: the SVG charts of a `make bench` run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = bench_charts::Args::parse();
    let results = bench_charts::results::Results::read(&args.raw)?;
    for written in bench_charts::charts::render_all(&results, &args.out)? {
        println!("{}", written.display());
    }
    Ok(())
}
