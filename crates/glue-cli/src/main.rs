//! `glue-cli`: look at GLUE data, tokenize it, and (soon) fine-tune on it.
//! Thin by design: flags are parsed here, the work is done by the library crates.

mod data_cmds;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "glue-cli",
    version,
    about = "Fine-tune and evaluate BERT-family encoders on GLUE"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show one example of a split (fields, label name, idx), or the split's schema.
    Inspect(data_cmds::InspectArgs),
    /// Tokenize one example (ids and tokens) or a whole split to JSON lines.
    Tokenize(data_cmds::TokenizeArgs),
}

/// Where the data lives; shared by every command that reads GLUE.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// GLUE config: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax (also mnli_matched, mnli_mismatched).
    #[arg(long)]
    pub task: String,
    /// Directory written by `cargo xtask fetch-glue`.
    #[arg(long, default_value = "data/glue")]
    pub data_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => data_cmds::inspect(&args),
        Command::Tokenize(args) => data_cmds::tokenize(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: the message names the problem and the fix.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
