//! `cargo xtask fetch-glue`: hub (or local mirror) -> verified files under the data dir.
//!
//! Every file is checked three ways before it takes its final name: its SHA-256
//! against the hub's etag (LFS files are named by their SHA-256), its parquet schema
//! against the task registry, and its row count against the dataset card.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use glue_data::{check_file, SplitSpec, Task, HUB_DATASET};
use glue_hub::{etag_of, HubFailure, RepoKind};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

const MANIFEST: &str = "manifest.json";

/// What the data dir knows about each file it holds, keyed by `<config>/<file>`.
type Manifest = BTreeMap<String, FileRecord>;

#[derive(Debug, Clone, PartialEq)]
struct FileRecord {
    sha256: String,
    bytes: u64,
    rows: usize,
}

enum Source<'a> {
    Hub,
    Dir(&'a Path),
}

enum Outcome {
    Present,
    Fetched,
    Failed(String),
}

pub fn run(tasks: &str, data_dir: &Path, from: Option<&Path>) -> Result<ExitCode> {
    let tasks = Task::parse_list(tasks)?;
    let source = match from {
        Some(dir) if !dir.is_dir() => {
            bail!("--from {}: no such directory", dir.display())
        }
        Some(dir) => Source::Dir(dir),
        None => Source::Hub,
    };
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let mut manifest = read_manifest(data_dir)?;
    let hub = Hub::from_env()?;

    let mut failures = 0;
    println!("{:<16} {:<22} {:>7}  status", "config", "split", "rows");
    for task in tasks {
        for split in task.spec().splits {
            let key = format!("{}/{}", task.name(), split.file_name());
            let outcome = match fetch_one(task, split, &key, data_dir, &source, &hub, &mut manifest)
            {
                Ok(outcome) => outcome,
                Err(e) if is_unreachable(&e) => {
                    bail!(
                        "cannot reach the Hugging Face hub ({e:#}); import a local copy with \
                         `--from DIR`, or point HF_ENDPOINT at a mirror"
                    )
                }
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            let status = match &outcome {
                Outcome::Present => "ok (already present)".to_string(),
                Outcome::Fetched => "ok (fetched)".to_string(),
                Outcome::Failed(why) => {
                    failures += 1;
                    format!("FAILED: {why}")
                }
            };
            println!(
                "{:<16} {:<22} {:>7}  {status}",
                task.name(),
                split.name,
                split.num_rows
            );
        }
    }
    if failures > 0 {
        eprintln!("error: {failures} file(s) could not be fetched; the others are in place");
        return Ok(ExitCode::from(1));
    }
    println!("all files verified in {}", data_dir.display());
    Ok(ExitCode::SUCCESS)
}

fn fetch_one(
    task: Task,
    split: &SplitSpec,
    key: &str,
    data_dir: &Path,
    source: &Source,
    hub: &Hub,
    manifest: &mut Manifest,
) -> Result<Outcome> {
    let target = data_dir.join(key);
    if let Some(record) = manifest.get(key) {
        if verify_record(&target, record, task, split).is_ok() {
            return Ok(Outcome::Present);
        }
    }
    let (path, expected_sha) = match source {
        Source::Dir(dir) => {
            let path = dir.join(key);
            if !path.exists() {
                bail!("not in {}", dir.display());
            }
            (path, None)
        }
        Source::Hub => hub.get(key)?,
    };
    let record = verify_file(&path, expected_sha.as_deref(), task, split)?;
    copy_atomically(&path, &target)?;
    manifest.insert(key.to_string(), record);
    write_manifest(data_dir, manifest)?;
    Ok(Outcome::Fetched)
}

/// Checks a file against the hub's sha256 (when known), the schema and the row count.
fn verify_file(
    path: &Path,
    expected_sha: Option<&str>,
    task: Task,
    split: &SplitSpec,
) -> Result<FileRecord> {
    let (sha256, bytes) = sha256_file(path)?;
    if let Some(expected) = expected_sha {
        if sha256 != expected {
            bail!("sha256 {sha256} does not match the hub's {expected} (download damaged)");
        }
    }
    let rows = check_file(path, task.spec())?;
    if rows != split.num_rows {
        bail!("{} rows, the hub card says {}", rows, split.num_rows);
    }
    Ok(FileRecord {
        sha256,
        bytes,
        rows,
    })
}

fn verify_record(path: &Path, record: &FileRecord, task: Task, split: &SplitSpec) -> Result<()> {
    let meta = fs::metadata(path)?;
    if meta.len() != record.bytes {
        bail!("size changed");
    }
    verify_file(path, Some(&record.sha256), task, split).map(|_| ())
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let digest = hasher.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), bytes))
}

/// Copies `from` to `target` through atomic-fs: a crash never leaves a partial file
/// under the final name.
fn copy_atomically(from: &Path, target: &Path) -> Result<()> {
    let dir = target.parent().context("target has no parent")?;
    fs::create_dir_all(dir)?;
    atomic_fs::write_file(target, |out| -> io::Result<()> {
        io::copy(&mut fs::File::open(from)?, out)?;
        Ok(())
    })
    .map_err(|f| f.into_inner(|_, e| e))
    .with_context(|| format!("cannot write {}", target.display()))
}

fn read_manifest(data_dir: &Path) -> Result<Manifest> {
    let path = data_dir.join(MANIFEST);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(Manifest::new());
    };
    // A damaged manifest only costs a re-verification, never a wrong "present".
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(Manifest::new());
    };
    let mut manifest = Manifest::new();
    if let Some(map) = value.as_object() {
        for (key, v) in map {
            let record = (|| {
                Some(FileRecord {
                    sha256: v.get("sha256")?.as_str()?.to_string(),
                    bytes: v.get("bytes")?.as_u64()?,
                    rows: v.get("rows")?.as_u64()? as usize,
                })
            })();
            if let Some(record) = record {
                manifest.insert(key.clone(), record);
            }
        }
    }
    Ok(manifest)
}

fn write_manifest(data_dir: &Path, manifest: &Manifest) -> Result<()> {
    let value: serde_json::Map<String, serde_json::Value> = manifest
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                serde_json::json!({"sha256": r.sha256, "bytes": r.bytes, "rows": r.rows}),
            )
        })
        .collect();
    let path = data_dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&value)?;
    atomic_fs::write_file(&path, |out| out.write_all(text.as_bytes()))
        .map_err(|f| f.into_inner(|_, e| e))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// GLUE's dataset repository through glue-hub (HF_HOME cache, HF_ENDPOINT and
/// HF_HUB_OFFLINE honoured as `huggingface_hub` does), each file checked against the
/// sha256 the hub gave for it.
struct Hub(glue_hub::Hub);

impl Hub {
    fn from_env() -> Result<Self> {
        Ok(Hub(glue_hub::Hub::from_env()?))
    }

    /// A verified path in the hub cache and the sha256 the hub gave for it.
    fn get(&self, key: &str) -> Result<(PathBuf, Option<String>)> {
        let hub = &self.0;
        if let Some(path) = hub.cached(HUB_DATASET, RepoKind::Dataset, key) {
            let etag = etag_of(&path);
            match (&etag, sha256_file(&path)) {
                (Some(etag), Ok((sha, _))) if &sha == etag => return Ok((path, Some(sha))),
                _ if hub.offline() => {
                    bail!("the cached copy is damaged and HF_HUB_OFFLINE is set; unset it to download again")
                }
                _ => {}
            }
        } else if hub.offline() {
            bail!("not in the hub cache and HF_HUB_OFFLINE is set; unset it or use --from DIR");
        }
        let bar = ProgressBar::new(0);
        let path = hub
            .download(HUB_DATASET, RepoKind::Dataset, key, bar)?
            .with_context(|| format!("not on the hub ({HUB_DATASET} has no {key})"))?;
        let etag = etag_of(&path);
        Ok((path, etag))
    }
}

/// Whether the hub could not be reached at all (no HTTP answer).
fn is_unreachable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<HubFailure>(),
        Some(HubFailure::Unreachable(_))
    )
}
