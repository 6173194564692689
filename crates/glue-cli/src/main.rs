//! `glue-cli`: look at GLUE data, tokenize it, fine-tune on it, evaluate and predict.
//! Thin by design: flags are parsed here, the work is done by the library crates.

mod data_cmds;
mod heap;
mod output;
mod parallel;
mod plot;
mod report;
mod submission;
mod suite;
mod suite_table;
mod train_cmds;

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
    /// Fine-tune on a task, evaluating every epoch, like HF `Trainer(...).train()`.
    Run(Box<train_cmds::RunArgs>),
    /// Score a fine-tuned model on a task's validation split(s).
    Evaluate(train_cmds::EvaluateArgs),
    /// Write GLUE leaderboard files (test-split predictions) for a fine-tuned model.
    Predict(train_cmds::PredictArgs),
    /// Fine-tune on several tasks x seeds (default: all nine, seeds 42,43,44), one
    /// folder per run, and tabulate median and mean ± std per task and the GLUE average.
    Suite(Box<suite::SuiteArgs>),
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

/// `--version`: what this binary is and what it runs on. Written in one go, ignoring a
/// closed pipe (`glue-cli --version | head -1`), where `println!` would panic.
fn print_version() {
    use std::io::Write;
    let cuda = match bert_model::select_device(bert_model::DeviceChoice::Auto) {
        Ok((tch::Device::Cuda(_), _)) => format!(
            "{} CUDA device(s), {}",
            tch::Cuda::device_count(),
            // What data-parallel CUDA runs will use (or why they cannot).
            torch_shim::distributed::nccl_version()
                .map_or_else(|e| format!("no NCCL ({})", e.0), |v| format!("NCCL {v}"))
        ),
        _ => "no CUDA device".to_string(),
    };
    let text = format!(
        "glue-cli {}\nlibtorch {} (built against {})\ndevices: cpu ({} threads{}), {cuda}\n",
        env!("CARGO_PKG_VERSION"),
        torch_shim::torch_version(),
        env!("GLUE_CLI_LIBTORCH_LIB"),
        tch::get_num_threads(),
        if bert_model::cpu_has_bf16() {
            ", bf16 in hardware"
        } else {
            ""
        }
    );
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// MKL's conditional numerical reproducibility: with `MKL_CBWR` unset, MKL may pick
/// its code path and reduction order at run time (alignment, thread timing), which can
/// make two launches of one run differ in the last bits (seen once in seven on a
/// Xeon). `AUTO` keeps the fastest path for this CPU and fixes that order; measured
/// cost on an AMD EPYC: none within noise (MRPC, 60 steps). MKL reads the variable at
/// its first call, so it is set before libtorch does anything; yours wins.
fn pin_mkl_code_path() {
    if std::env::var_os("MKL_CBWR").is_none() {
        std::env::set_var("MKL_CBWR", "AUTO");
    }
}

/// Intra-op threads: one per physical core unless OMP_NUM_THREADS says otherwise;
/// under torchrun the cores are shared by the machine's ranks (LOCAL_WORLD_SIZE).
fn set_threads() {
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        let ranks = std::env::var("LOCAL_WORLD_SIZE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        tch::set_num_threads((bert_model::physical_cores() / ranks).max(1) as i32);
    }
}

fn main() -> ExitCode {
    pin_mkl_code_path();
    set_threads();
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--version" || a == "-V")
    {
        print_version();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    // tch reports some failures by panicking; keep them to one line, no backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Inspect(args) => data_cmds::inspect(&args),
        Command::Tokenize(args) => data_cmds::tokenize(&args),
        Command::Run(args) if args.data.task.trim().eq_ignore_ascii_case("all") => {
            suite::SuiteArgs::from_run(&args).and_then(|s| suite::suite(&s))
        }
        Command::Run(args) => train_cmds::run(&args),
        Command::Evaluate(args) => train_cmds::evaluate_cmd(&args),
        Command::Predict(args) => train_cmds::predict(&args),
        Command::Suite(args) => suite::suite(&args),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            // One line: the message names the problem and the fix.
            eprintln!("error: {}", crate::output::one_line(&e));
            ExitCode::from(2)
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let first = msg.lines().next().unwrap_or("unknown failure");
            eprintln!("error: internal error: {first}");
            ExitCode::from(1)
        }
    }
}
