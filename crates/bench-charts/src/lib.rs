//! The charts of `make bench`, drawn as SVG from the raw results of the run
//! (`bench/results/raw/`, written by `scripts/bench.sh`), never from numbers
//! typed in by hand.
//!
//! # Layout
//!
//! - [`results`]: the raw JSON files a run leaves, read into typed rows; a
//!   section that did not run has no rows, and its charts are not drawn.
//! - [`charts`]: one function per chart, each writing one SVG file.
//!
//! Text is left to the SVG viewer (`<text>` elements, sans-serif): plotters is
//! built without its font features, so no font files or system libraries are needed.

use std::path::PathBuf;

pub mod charts;
pub mod results;

/// Where the raw results are, and where the charts go.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-charts", about)]
pub struct Args {
    /// The run's raw results (`bench/results/raw`).
    pub raw: PathBuf,
    /// The directory the SVG files are written to (`docs/charts`).
    pub out: PathBuf,
}
