//! Project chores that must work before libtorch exists: `cargo xtask setup`
//! installs it, `cargo xtask fetch-glue` downloads the data. No tch here.

mod bench;
mod fetch;
mod gpu_check;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "glue-rs project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the project venv with torch 2.11.0 (libtorch for tch) and the test model.
    Setup {
        /// Also create .venv-ref with transformers + scikit-learn over .venv's torch: the
        /// reference for goldens, live HF checks and benchmarks (~3 GB, CUDA libraries included).
        #[arg(long)]
        reference: bool,
    },
    /// Download GLUE parquet files from the hub dataset nyu-mll/glue and verify them.
    FetchGlue {
        /// Comma-separated configs (e.g. mrpc,sst2) or `all`.
        #[arg(long, default_value = "all")]
        tasks: String,
        /// Where the files go: <data-dir>/<config>/<split>-00000-of-00001.parquet.
        #[arg(long, default_value = "data/glue")]
        data_dir: PathBuf,
        /// Import from a local directory of the hub's layout instead of downloading.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Build target/gpu-check/ (binary, small model, golden batches, run.sh) for a GPU machine.
    GpuCheck,
    /// Train with glue-cli and with HF Trainer side by side (interleaved) and print one table.
    BenchTrain(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { reference } => setup::run(reference),
        Command::FetchGlue {
            tasks,
            data_dir,
            from,
        } => fetch::run(&tasks, &data_dir, from.as_deref()),
        Command::GpuCheck => gpu_check::run(),
        Command::BenchTrain(args) => bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
