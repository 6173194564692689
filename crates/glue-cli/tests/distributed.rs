//! Data-parallel runs over PyTorch's c10d (Gloo, loopback), the ranks started as
//! torchrun starts them: the same binary with RANK, WORLD_SIZE, LOCAL_RANK,
//! MASTER_ADDR and MASTER_PORT set (and once through torchrun itself).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use glue_testkit::{mirror_dir, test_model_dir};
use tch::Tensor;

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test model with dropout off, so that runs of different world sizes draw no
/// random masks and can be compared weight for weight.
fn model_without_dropout(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    fs::create_dir_all(&model).unwrap();
    for entry in fs::read_dir(test_model_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
        }
    }
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    fs::write(&path, config.to_string()).unwrap();
    model
}

fn glue_cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glue-cli"));
    c.env_remove("HF_HUB_OFFLINE")
        .env_remove("WORLD_SIZE")
        .env_remove("RANK");
    c
}

/// `glue-cli run` on MRPC with small batches and sequences.
fn run_args(model: &Path, out: &Path, batch: usize, steps: usize) -> Vec<String> {
    let mirror = mirror_dir();
    [
        "run",
        "--task",
        "mrpc",
        "--device",
        "cpu",
        "--eval-strategy",
        "no",
        "--max-seq-length",
        "48",
        "--per-device-eval-batch-size",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--model".into(),
        model.display().to_string(),
        "--data-dir".into(),
        mirror.display().to_string(),
        "--output-dir".into(),
        out.display().to_string(),
        "--per-device-train-batch-size".into(),
        batch.to_string(),
        "--max-steps".into(),
        steps.to_string(),
    ])
    .collect()
}

/// Starts `world` ranks of `glue-cli args`, each with one thread, stderr to `log-<rank>`.
fn spawn_ranks(world: usize, args: &[String], logs: &Path) -> Vec<Child> {
    let port = free_port().to_string();
    (0..world)
        .map(|rank| {
            let log = fs::File::create(logs.join(format!("log-{rank}"))).unwrap();
            glue_cli()
                .args(args)
                .env("WORLD_SIZE", world.to_string())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_all(children: Vec<Child>, logs: &Path) -> Vec<Output> {
    children
        .into_iter()
        .enumerate()
        .map(|(rank, child)| {
            let out = child.wait_with_output().unwrap();
            let log = fs::read_to_string(logs.join(format!("log-{rank}"))).unwrap_or_default();
            assert!(out.status.success(), "rank {rank} failed:\n{log}");
            out
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn max_weight_diff(a: &Path, b: &Path) -> f64 {
    weights(a)
        .iter()
        .zip(weights(b))
        .map(|((ka, ta), (kb, tb))| {
            assert_eq!(ka, &kb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// The evaluation metrics that do not depend on timing.
fn scores(stdout: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    for split in v.as_object_mut().unwrap().values_mut() {
        let split = split.as_object_mut().unwrap();
        split.remove("runtime");
        split.remove("samples_per_second");
    }
    v
}

/// 2 ranks x batch 4 for 20 steps end with the weights of 1 process x batch 8
/// (within 1e-5: the gradient average sums in another order); evaluating with 2
/// ranks (batches shared out, logits gathered) gives exactly one process's metrics,
/// and predicting with 2 ranks writes one process's leaderboard file.
#[test]
fn two_ranks_train_and_evaluate_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_without_dropout(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let single = glue_cli()
        .args(run_args(&model, &one, 8, 20))
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    let ranks = spawn_ranks(2, &run_args(&model, &two, 4, 20), tmp.path());
    let outputs = wait_all(ranks, tmp.path());
    // Only rank 0 reports and writes.
    assert!(String::from_utf8_lossy(&outputs[0].stdout).contains("final evaluation"));
    assert!(outputs[1].stdout.is_empty());
    let diff = max_weight_diff(&one, &two);
    assert!(
        diff < 1e-5,
        "2 ranks vs 1 process: weights differ by {diff}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(two.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["global_step"], 20);

    let evaluate: Vec<String> = [
        "evaluate",
        "--task",
        "mrpc",
        "--device",
        "cpu",
        "--max-seq-length",
        "48",
        "--model",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        one.display().to_string(),
        "--data-dir".into(),
        mirror_dir().display().to_string(),
    ])
    .collect();
    let single = glue_cli()
        .args(&evaluate)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(single.status.success());
    let outputs = wait_all(spawn_ranks(2, &evaluate, tmp.path()), tmp.path());
    assert_eq!(scores(&outputs[0].stdout), scores(&single.stdout));
    assert!(outputs[1].stdout.is_empty());

    // Test-split predictions likewise: the same leaderboard file, written by rank 0.
    let predict = |out: &Path| -> Vec<String> {
        let mut args = evaluate.clone();
        args[0] = "predict".into();
        args.extend(["--output-dir".into(), out.display().to_string()]);
        args
    };
    let (alone, shared) = (tmp.path().join("alone"), tmp.path().join("shared"));
    let single = glue_cli()
        .args(predict(&alone))
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(single.status.success());
    let outputs = wait_all(spawn_ranks(2, &predict(&shared), tmp.path()), tmp.path());
    assert!(outputs[1].stdout.is_empty());
    let file = |dir: &Path| fs::read_to_string(dir.join("MRPC.tsv")).unwrap();
    assert_eq!(file(&shared).lines().count(), 1726, "header and 1725 rows");
    assert_eq!(file(&shared), file(&alone));
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A rank killed mid-training ends the other with one clear line and a non-zero
/// exit, well before the collective timeout.
#[test]
fn a_killed_rank_stops_the_other_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = run_args(&test_model_dir(), &tmp.path().join("out"), 4, 500);
    args.extend(["--ddp-timeout".into(), "300".into()]);
    let mut ranks = spawn_ranks(2, &args, tmp.path());
    let log0 = tmp.path().join("log-0");
    wait_for("rank 0 to train", Duration::from_secs(120), || {
        fs::read_to_string(&log0).is_ok_and(|l| l.contains("training:"))
    });
    std::thread::sleep(Duration::from_secs(2));
    ranks[1].kill().unwrap();
    let killed = Instant::now();
    let status = ranks[0].wait().unwrap();
    let _ = ranks[1].wait();
    let log = fs::read_to_string(&log0).unwrap();
    assert!(!status.success(), "rank 0 went on: {log}");
    assert!(
        killed.elapsed() < Duration::from_secs(120),
        "rank 0 took {:?} to stop",
        killed.elapsed()
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("data-parallel training: rank 0:") && last.contains("failed"),
        "{log}"
    );
}

/// One rank of `glue-cli args` at `port`; returns its exit code, stderr and run time.
fn one_rank(rank: usize, port: u16, args: &[String]) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let out = glue_cli()
        .args(args)
        .env("WORLD_SIZE", "2")
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, start.elapsed())
}

/// The rendezvous failing (the master's port taken by another program; no master
/// listening) ends the rank with one line naming the address, within --ddp-timeout.
#[test]
fn a_busy_port_or_an_absent_master_gives_one_line_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = run_args(&test_model_dir(), &tmp.path().join("out"), 4, 5);
    args.extend(["--ddp-timeout".into(), "5".into()]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let absent = free_port();
    for (what, rank, port) in [("busy port", 0, port), ("absent master", 1, absent)] {
        let (code, stderr, took) = one_rank(rank, port, &args);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "rank {rank} could not join the group at 127.0.0.1:{port}"
            )),
            "{what}: {stderr}"
        );
        assert!(took < Duration::from_secs(60), "{what}: took {took:?}");
        assert!(!tmp.path().join("out").exists(), "{what}: wrote output");
    }
    drop(taken);
}

/// NCCL on a CPU run under torchrun is one line, before anything is written; a lone
/// process (no torchrun) ignores the flag, as HF does.
#[test]
fn nccl_on_cpu_is_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut args = run_args(&test_model_dir(), &out, 4, 2);
    args.extend(["--ddp-backend".into(), "nccl".into()]);
    let refused = glue_cli()
        .args(&args)
        .env("WORLD_SIZE", "1")
        .env("RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", free_port().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nccl needs CUDA") && stderr.contains("--ddp-backend gloo"));
    assert!(!out.exists(), "wrote output");
    let alone = glue_cli().args(&args).output().unwrap();
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
}

/// Both ranks killed after a checkpoint; resuming finishes with the weights of an
/// uninterrupted 2-rank run, bit for bit. Resuming it with one process is refused.
#[test]
fn two_ranks_resume_after_sigkill_as_if_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let model = test_model_dir();
    let with_saves = |out: &Path| {
        let mut a = run_args(&model, out, 4, 20);
        a.extend(["--save-strategy", "steps", "--save-steps", "5"].map(String::from));
        a
    };
    let whole = tmp.path().join("whole");
    let whole_logs = tmp.path().join("whole-logs");
    fs::create_dir_all(&whole_logs).unwrap();
    wait_all(
        spawn_ranks(2, &with_saves(&whole), &whole_logs),
        &whole_logs,
    );

    let cut = tmp.path().join("cut");
    let mut ranks = spawn_ranks(2, &with_saves(&cut), tmp.path());
    wait_for("checkpoint-5", Duration::from_secs(300), || {
        cut.join("checkpoint-5").is_dir()
    });
    for rank in &mut ranks {
        let _ = rank.kill();
        let _ = rank.wait();
    }
    assert!(
        !cut.join("checkpoint-20").exists(),
        "the run ended before the kill"
    );

    let one = glue_cli()
        .args(with_saves(&cut))
        .args(["--resume-from-checkpoint", "latest"])
        .output()
        .unwrap();
    assert_eq!(one.status.code(), Some(2));
    let error = String::from_utf8_lossy(&one.stderr);
    assert!(
        error.contains("resume with the same number of processes"),
        "{error}"
    );

    let mut resume = with_saves(&cut);
    resume.extend(["--resume-from-checkpoint".into(), "latest".into()]);
    wait_all(spawn_ranks(2, &resume, tmp.path()), tmp.path());
    assert_eq!(max_weight_diff(&whole, &cut), 0.0);
}

/// Through torchrun itself (`--no-python`), when the project venv has it.
#[test]
fn torchrun_starts_a_two_rank_run() {
    let torchrun = glue_testkit::workspace_root().join(".venv/bin/torchrun");
    if !torchrun.is_file() {
        eprintln!("\n*** SKIPPED: .venv/bin/torchrun is missing (cargo xtask setup) ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = Command::new(torchrun)
        .args(["--nproc-per-node", "2", "--master-port"])
        .arg(free_port().to_string())
        .args(["--no-python", env!("CARGO_BIN_EXE_glue-cli")])
        .args(run_args(&test_model_dir(), &out, 4, 4))
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}");
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["global_step"], 4);
    assert_eq!(
        state["glue_rs"]["world_size"], 2,
        "torchrun's two ranks joined one group"
    );
    assert_eq!(text.matches("final evaluation").count(), 1, "{text}");
}

/// This machine's first IPv4 address that is not loopback (`hostname -I`), if any.
fn non_loopback_ipv4() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
}

/// Two torchrun agents as two nodes of one process each (`--nnodes 2 --node-rank`),
/// meeting at this machine's network address rather than loopback, as two machines
/// would: the same weights, bit for bit, as one node with two processes.
#[test]
fn two_torchrun_nodes_train_like_one_node_with_two_processes() {
    let torchrun = glue_testkit::workspace_root().join(".venv/bin/torchrun");
    let Some(address) = non_loopback_ipv4() else {
        eprintln!("\n*** SKIPPED: no non-loopback IPv4 address (hostname -I) ***\n");
        return;
    };
    if !torchrun.is_file() {
        eprintln!("\n*** SKIPPED: .venv/bin/torchrun is missing (cargo xtask setup) ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let launch = |torchrun_args: &[String], out: &Path| {
        Command::new(&torchrun)
            .args(torchrun_args)
            .args(["--no-python", env!("CARGO_BIN_EXE_glue-cli")])
            .args(run_args(&test_model_dir(), out, 4, 6))
            .env_remove("HF_HUB_OFFLINE")
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let port = free_port().to_string();
    let nodes: Vec<Child> = (0..2)
        .map(|node| {
            let args: Vec<String> = [
                "--nnodes",
                "2",
                "--node-rank",
                &node.to_string(),
                "--nproc-per-node",
                "1",
                "--master-addr",
                &address,
                "--master-port",
                &port,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            launch(&args, &tmp.path().join(format!("node{node}")))
        })
        .collect();
    for (node, child) in nodes.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "node {node}:\n{log}");
    }
    assert!(!tmp.path().join("node1").exists(), "only rank 0 writes");
    let one_node = tmp.path().join("one-node");
    let args: Vec<String> = [
        "--nproc-per-node",
        "2",
        "--master-port",
        &free_port().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = launch(&args, &one_node).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = max_weight_diff(&tmp.path().join("node0"), &one_node);
    assert_eq!(diff, 0.0, "2 nodes x 1 process vs 1 node x 2 processes");
}
